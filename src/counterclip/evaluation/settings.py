"""A run's settings as one record field, so that records made with different settings are never read as one
experiment: the report keeps them in separate tables (labelled with what differs), and a re-run with changed
settings gets records of its own (the settings are part of every cache and record key already)."""

from __future__ import annotations

# EvalConfig fields that choose *which* cells run, or how fast, but not what any cell computes. Every other
# field (including ones added later) counts as a setting: when in doubt, keep results apart.
NOT_SETTINGS = {"output", "datasets", "attacks", "eps", "defenses", "threat_model", "adaptive_attacks",
                "batch_size", "device", "overwrite", "probe_size", "download", "on_invalid"}
# on_invalid: a valid cell is the same under fail and skip; an invalid one carries its own mark (validate.py)


# Settings that only tune the attacks. Each record's own attack config says what its attack did, so the report
# reads records that differ only in these as one experiment (one worst case over every attack that was run) and
# names the attacks by their differing knobs instead (report/records.py).
ATTACK_KNOBS = {"steps", "step_size", "eot_samples", "aa_version", "aa_steps", "square_queries", "attack_args",
                "attack_eps"}


def run_settings(cfg, model_id: dict, version: str) -> dict:
    from .state import json_plain

    s = {k: v for k, v in cfg.to_dict().items() if k not in NOT_SETTINGS}
    s["weights_sha256"] = model_id.get("weights_sha256")
    s["vision_checkpoint_sha256"] = model_id.get("vision_checkpoint_sha256")
    s["counterclip_version"] = version
    return json_plain(s)
