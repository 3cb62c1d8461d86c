"""A user's defense as the golden folder knows it: a 3x3 box blur (deterministic, no gradient mode of its own,
so the grid attacks it with generic BPDA). Its import path ``golden_plugin:Blur`` is part of the golden keys."""

import torch.nn.functional as F

from counterclip.defenses import Defense


class Blur(Defense):
    name = "blur"

    def __init__(self, passes: int = 1):
        self.passes = passes

    def predict(self, classifier, x, generator=None):
        c = x.shape[1]
        k = x.new_full((c, 1, 3, 3), 1 / 9)
        for _ in range(self.passes):
            x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
        return classifier(x)
