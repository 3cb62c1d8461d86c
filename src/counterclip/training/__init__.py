"""The recipe that trains the embedded ``tiny-fmnist`` CLIP (``counterclip train-tiny``)."""
