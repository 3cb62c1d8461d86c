"""What one ``counterclip eval`` run evaluates."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..budgets import parse_eps

PAPER_DATASETS = ["cifar10", "cifar100", "stl10", "imagenet", "caltech101", "caltech256", "oxford-pets",
                  "flowers102", "fgvc-aircraft", "stanford-cars", "sun397", "country211", "food101", "eurosat",
                  "dtd", "pcam"]
THREAT_MODELS = ("oblivious", "adaptive", "both")
# fp16-all: the reference code's mode, clean evaluation, attacks and defenses under fp16 autocast (spec section 7)
PRECISIONS = ("fp32", "bf16", "fp16", "fp16-all")

PRESETS = {
    # the paper's protocol (spec section 3): 16 datasets, Resize(256)+CenterCrop(224), PGD-10 and CW at 1/255 and
    # 4/255 with step 1/255, AutoAttack as the paper ran it (aa-paper: APGD-CE + APGD-DLR, 100 iterations) at
    # 4/255, TTC defaults
    # (spec section 7): OpenAI's weights need QuickGELU; the reference code's own class names and templates;
    # TinyImageNet as its own row, outside the 16-dataset average (the report leaves it out, as the paper does)
    "paper": {"model": "ViT-B-32-quickgelu", "pretrained": "openai",
              "datasets": PAPER_DATASETS + ["tinyimagenet"],
              "attacks": ["pgd", "cw", "aa-paper"], "eps": ["1/255", "4/255"], "steps": 10,
              "attack_eps": {"aa-paper": ["4/255"]},
              "step_size": "1/255", "defenses": ["none", "rn", "ttc", "tte", "anti-adversary", "hedge"],
              "resize": 256, "image_size": 224, "prompts": "reference"},
    # the embedded model: 28 px grayscale images are far less fragile than photos, so larger budgets too
    "tiny": {"model": "tiny-fmnist", "datasets": ["fashion-mnist"], "attacks": ["pgd"],
             "eps": ["1/255", "4/255", "8/255", "16/255"], "steps": 10, "step_size": "auto",
             "defenses": ["none", "rn", "ttc", "tte", "anti-adversary", "hedge"]},
}


@dataclass
class EvalConfig:
    output: str
    model: str = "tiny-fmnist"
    pretrained: str | None = None
    vision_checkpoint: str | None = None
    datasets: list = field(default_factory=lambda: ["fashion-mnist"])
    data_root: str | None = None
    download: bool = False
    allow_partial: bool = False  # evaluate a dataset whose sample count is off (the record says so)
    attacks: list = field(default_factory=lambda: ["none"])
    eps: list = field(default_factory=lambda: ["1/255"])
    steps: int = 10
    step_size: str = "auto"
    defenses: list = field(default_factory=lambda: ["none"])
    tau_thres: str = "0.2"
    tau_quantile: float = 0.1
    ttc_steps: int = 2
    ttc_eps: str = "4/255"
    ttc_step_size: str = "1/255"
    beta: float = 2.0
    threat_model: str = "oblivious"
    adaptive_attacks: list | None = None  # None: every one that applies to the defense
    eot_samples: int = 8
    limit: int | None = None
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    overwrite: bool = False
    image_size: int | None = None  # default: the model's input size
    resize: int | None = None
    precision: str = "fp32"  # fp32 | bf16 | fp16 (the defense's passes only) | fp16-all (reference mode: everything)
    quantize: str = "none"  # serialisation of adversarial inputs before the defense: none, round, truncate
    prompts: str = "clip"  # class names / templates style: clip or reference (data/prompts.py)
    probe_size: int = 32  # images the sanity checks probe
    aa_version: str = "standard"  # autoattack's version (aa-paper is always "paper")
    aa_steps: int = 100  # iterations of AutoAttack's APGD/FAB parts
    square_queries: int = 5000  # Square's query budget (alone and inside AutoAttack)
    eval_draws: int = 1  # draws of a randomised defense each final input is classified on
    on_invalid: str = "fail"  # an output that fails its checks: fail the cell, or skip (count wrong, mark)
    attack_eps: dict | None = None  # attack -> the only budgets it runs at (the paper preset's aa-paper at 4/255)
    defense_args: dict = field(default_factory=dict)  # name -> {key: value}, --defense-arg (plugins.py)
    attack_args: dict = field(default_factory=dict)  # name -> {key: value}, --attack-arg
    # counterclip.evaluate(...): Python objects by their grid name (defenses: instances; attacks: eps -> attack)
    objects: dict = field(default_factory=dict, repr=False, compare=False)

    def validate(self) -> "EvalConfig":
        from ..attacks import ATTACKS
        from ..defenses import DEFENSES
        from ..errors import CounterclipError, UnknownNameError

        if self.precision not in PRECISIONS:
            raise UnknownNameError("precision", self.precision, PRECISIONS)
        from ..plugins import check_adaptive_args, check_attack_args, check_args, defense_class, is_plugin
        from ..attacks import ADAPTIVE

        for a in self.attacks:
            if a != "none" and a not in ATTACKS and a not in self.objects:
                ATTACKS.unknown(a, extra=("none",))
        for d in self.defenses:
            if d not in DEFENSES and d not in self.objects:
                DEFENSES.unknown(d)
        # registered words by their canonical spelling (an alias or 'PGD' names the same cells and records)
        self.attacks = [a if a == "none" or a in self.objects else ATTACKS.canonical(a) for a in self.attacks]
        self.defenses = [d if d in self.objects else DEFENSES.canonical(d) for d in self.defenses]
        for d, args in self.defense_args.items():
            if d not in self.defenses:
                raise ValueError(f"--defense-arg for {d!r}, which is not among --defense {','.join(self.defenses)}")
            if d not in self.objects:
                check_args(defense_class(d), args, "defense", d)
            if d in DEFENSES and d not in self.objects and args:  # a bad value (ttc.eps=4) now, not mid-run
                try:
                    DEFENSES.resolve(d)(**args)
                except (ValueError, TypeError) as e:
                    shown = ", ".join(f"{d}.{k}={v!r}" for k, v in args.items())
                    raise ValueError(f"--defense-arg {shown}: {e}") from None
        from .describe import wanted as adaptive_wanted

        for a, args in self.attack_args.items():
            if a in ADAPTIVE and a not in self.attacks:  # an adaptive attack's own knobs (grid.adaptive)
                if self.threat_model == "oblivious":
                    raise ValueError(f"--attack-arg for the adaptive attack {a!r} needs --threat-model adaptive "
                                     "or both")
                if not adaptive_wanted(a, self.adaptive_attacks):
                    raise ValueError(f"--attack-arg for the adaptive attack {a!r}, which is not among "
                                     f"--adaptive-attack {','.join(self.adaptive_attacks)}")
                check_adaptive_args(a, args)
                continue
            if a not in self.attacks:
                raise ValueError(f"--attack-arg for {a!r}, which is not among --attack {','.join(self.attacks)} "
                                 f"or the adaptive attacks {','.join(ADAPTIVE.names())}")
            if a not in self.objects or isinstance(self.objects[a], type):
                check_attack_args(a, args, self.objects.get(a))
            if a not in self.objects and not is_plugin(a) and args:  # a bad value now, naming it, not mid-run
                from ..attacks import build_attack

                try:
                    build_attack(a, 1 / 255, **args)
                except (ValueError, TypeError, CounterclipError) as e:  # the registry's line names the attack
                    shown = ", ".join(f"{a}.{k}={v!r}" for k, v in args.items())
                    raise ValueError(f"--attack-arg {shown}: {e}") from None
        if self.threat_model not in THREAT_MODELS:
            raise UnknownNameError("threat model", self.threat_model, THREAT_MODELS)
        for e in self.eps:
            parse_eps(e, "--eps")
        parse_eps(self.ttc_eps, "--ttc-eps")
        parse_eps(self.ttc_step_size, "--ttc-step-size")
        if self.step_size != "auto":
            parse_eps(self.step_size, "--step-size")
        if self.tau_thres != "auto":
            try:
                thr = float(self.tau_thres)
            except ValueError:
                thr = float("nan")
            if thr != thr or thr < 0:
                raise ValueError(f"--tau-thres must be a number >= 0 (inf allowed) or 'auto', not {self.tau_thres!r}")
        if not (self.beta == self.beta and abs(self.beta) != float("inf")):
            raise ValueError(f"--beta must be a finite number, not {self.beta}")
        if self.adaptive_attacks is not None:
            for a in self.adaptive_attacks:
                if a not in ADAPTIVE:
                    ADAPTIVE.unknown(a)
            if self.threat_model == "oblivious":
                raise ValueError("--adaptive-attack needs --threat-model adaptive or both")
        if not any(a != "none" for a in self.attacks) and (
                self.adaptive_attacks is not None or any(a in ADAPTIVE for a in self.attack_args)):
            raise ValueError("the adaptive attacks run at the budgets of an --attack (e.g. --attack pgd --eps 4/255);"
                             " none is given")
        from .quantize import MODES as QUANTIZE_MODES

        if self.quantize not in QUANTIZE_MODES:
            raise UnknownNameError("quantize mode", self.quantize, QUANTIZE_MODES)
        from ..attacks.autoattack import VERSIONS

        if self.aa_version not in VERSIONS:
            raise UnknownNameError("AutoAttack version", self.aa_version, VERSIONS)
        if self.aa_steps < 0 or self.square_queries < 0 or self.eval_draws < 1:
            raise ValueError("--aa-steps and --square-queries must be >= 0, --eval-draws >= 1")
        if self.batch_size < 1 or self.steps < 0 or self.eot_samples < 1:
            raise ValueError("--batch-size and --eot-samples must be >= 1, --steps >= 0")
        from .validate import check_mode

        check_mode(self.on_invalid)
        from ..data.prompts import check_style

        check_style(self.prompts)
        self.datasets = list(dict.fromkeys(self.datasets))  # a repeated name is evaluated once
        return self

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(replace(self, objects={})).items() if k != "objects"}
