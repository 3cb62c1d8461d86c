"""Regenerate ``src/counterclip/data/metadata/reference/*.json``: the class names and templates exactly as the
reference TTC code (Xing, Zhao, Sebe, CVPR 2025) forms its prompts.

Dev tool, not part of the package (run it by hand; pycountry is needed here only):

    python tools/make_reference_prompts.py /path/to/CLIP-Test-time-Counterattacks   # a checkout of the reference

It reads, from the checkout, only data: the Flowers-102 name list, the EuroSAT names and the two PCAM sentences
(Python literals, read with ``ast``, never imported or executed) and ``support/*_refined_labels.json``. The
other lists follow the reference's string rules (applied below to our packaged label-order identifiers,
``metadata/<key>.json`` ``raw_classes``), with Country211 names from pycountry 24.6.1 as the reference does.
Each output file holds ``classnames`` and ``templates`` such that ``template.format(name)`` is, character for
character, the sentence the reference tokenizes for that class.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

META = Path(__file__).resolve().parents[1] / "src" / "counterclip" / "data" / "metadata"
PLAIN = "This is a photo of a {}."  # code/utils.py get_text_prompts_val's default template

# SUN397 ClassName.txt entries that hold a '/' (the reference keeps the path form "apartment_building/outdoor";
# our raw_classes flatten '/' to '_'). Checked below: flattening these gives raw_classes exactly.
SUN397_WITH_SLASH = [
    "apartment_building/outdoor", "apse/indoor", "arrival_gate/outdoor", "athletic_field/outdoor", "atrium/public",
    "badminton_court/indoor", "bakery/shop", "balcony/exterior", "balcony/interior", "basketball_court/outdoor",
    "bazaar/indoor", "bazaar/outdoor", "bistro/indoor", "booth/indoor", "bow_window/indoor", "bow_window/outdoor",
    "brewery/indoor", "cabin/outdoor", "canal/natural", "canal/urban", "car_interior/backseat",
    "car_interior/frontseat", "casino/indoor", "cathedral/indoor", "cathedral/outdoor", "cavern/indoor",
    "chicken_coop/indoor", "chicken_coop/outdoor", "church/indoor", "church/outdoor", "cloister/indoor",
    "control_tower/outdoor", "covered_bridge/exterior", "cubicle/office", "desert/sand", "desert/vegetation",
    "diner/indoor", "diner/outdoor", "dinette/home", "dinette/vehicle", "doorway/outdoor", "driving_range/outdoor",
    "elevator/door", "elevator/interior", "escalator/indoor", "factory/indoor", "field/cultivated", "field/wild",
    "firing_range/indoor", "florist_shop/indoor", "forest/broadleaf", "forest/needleleaf", "garage/indoor",
    "gazebo/exterior", "general_store/indoor", "general_store/outdoor", "greenhouse/indoor", "greenhouse/outdoor",
    "gymnasium/indoor", "hangar/indoor", "hangar/outdoor", "hot_tub/outdoor", "hotel/outdoor",
    "hunting_lodge/outdoor", "ice_skating_rink/indoor", "ice_skating_rink/outdoor", "inn/outdoor", "jacuzzi/indoor",
    "jail/indoor", "kennel/indoor", "kennel/outdoor", "labyrinth/outdoor", "lake/natural", "library/indoor",
    "library/outdoor", "lido_deck/outdoor", "market/indoor", "market/outdoor", "moat/water", "monastery/outdoor",
    "mosque/indoor", "mosque/outdoor", "movie_theater/indoor", "museum/indoor", "nuclear_power_plant/outdoor",
    "observatory/outdoor", "oil_refinery/outdoor", "outhouse/outdoor", "parking_garage/indoor",
    "parking_garage/outdoor", "pilothouse/indoor", "planetarium/outdoor", "podium/indoor", "podium/outdoor",
    "poolroom/establishment", "poolroom/home", "power_plant/outdoor", "pub/indoor", "shopping_mall/indoor",
    "stadium/baseball", "stadium/football", "stage/indoor", "subway_station/platform", "swimming_pool/indoor",
    "swimming_pool/outdoor", "synagogue/indoor", "synagogue/outdoor", "temple/east_asia", "temple/south_asia",
    "tennis_court/indoor", "tennis_court/outdoor", "tent/outdoor", "theater/indoor_procenium",
    "theater/indoor_seats", "track/outdoor", "train_station/platform", "underwater/coral_reef",
    "volleyball_court/indoor", "volleyball_court/outdoor", "warehouse/indoor", "waterfall/block", "waterfall/fan",
    "waterfall/plunge", "wine_cellar/barrel_storage", "wine_cellar/bottle_storage", "wrestling_ring/indoor",
]

# Country211's folders are ISO 3166 alpha-2 codes in sorted order. Our packaged (CLIP) names are in that order;
# these are the names pycountry does not find by exact name (sortedness of the result is checked below).
COUNTRY_CODE_FIXES = {
    "Bonaire, Saint Eustatius and Saba": "BQ", "DR Congo": "CD", "Faeroe Islands": "FO", "Curacao": "CW",
    "South Georgia and South Sandwich Is.": "GS", "St. Kitts and Nevis": "KN", "St. Lucia": "LC",
    "Saint-Martin": "MF", "Macau": "MO", "St. Helena": "SH", "Svalbard and Jan Mayen Islands": "SJ",
    "Sint Maarten": "SX", "Turkey": "TR", "United States Virgin Islands": "VI", "Kosovo": "XK",
    "Aland Islands": "AX", "Cote d'Ivoire": "CI", "Falkland Islands": "FK", "Macedonia": "MK", "Palestine": "PS",
    "Reunion": "RE", "Russia": "RU", "Vatican": "VA",
}


def meta(key: str) -> dict:
    return json.loads((META / (key.replace("-", "_") + ".json")).read_text())


def literal(path: Path, name: str):
    """The value of ``name = <literal>`` (module or class level) in a Python file, without running it."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"{path}: no literal assignment to {name}")


def clean(s: str) -> str:  # the reference's most common rule: lower(), '_' and '-' -> ' '
    return s.lower().replace("_", " ").replace("-", " ")


def country_names() -> tuple[list[str], list[str]]:
    import pycountry

    if getattr(pycountry, "__version__", None) not in (None, "24.6.1"):
        print(f"warning: pycountry {pycountry.__version__}, the reference used 24.6.1", file=sys.stderr)
    by_name = {}
    for c in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            if getattr(c, attr, None):
                by_name.setdefault(getattr(c, attr), c.alpha_2)
    codes = [COUNTRY_CODE_FIXES.get(n) or by_name[n] for n in meta("country211")["classnames"]]
    assert codes == sorted(codes) and len(set(codes)) == 211, "Country211 codes must be the 211 sorted folders"
    names = {c.alpha_2: c.name for c in pycountry.countries}
    names["XK"] = "Kosovo"  # not in ISO 3166; the reference adds it by hand
    return codes, [names[c].replace("_", " ").replace("-", " ") for c in codes]


def build(ref: Path) -> dict[str, dict]:
    ds = ref / "code" / "replace" / "datasets"
    out: dict[str, dict] = {}

    def put(key, names, template, source, **extra):
        out[key] = {"key": key, "prompts": "reference", "num_classes": len(names), "classnames": list(names),
                    "templates": [template], "source": source, **extra}

    for key in ("cifar10", "cifar100", "stl10"):
        put(key, meta(key)["raw_classes"], PLAIN, "torchvision's .classes, unchanged (code/utils.py "
            "get_text_prompts_val)")
    refined = json.loads((ref / "support" / "imagenet_refined_labels.json").read_text())
    wnids = [w for w in meta("imagenet")["raw_classes"] if w != "n03710637"]
    assert sorted(refined) == wnids, "the refined ImageNet labels must cover the 999 kept WordNet ids"
    put("imagenet", [refined[w]["clean_name"] for w in wnids], PLAIN,
        "support/imagenet_refined_labels.json clean_name by WordNet id; class folder n03710637 ('maillot', a "
        "duplicate of n03710721) and its images dropped, 999 classes renumbered (code/replace/datasets/folder.py)",
        raw_classes=wnids, drop_classes=["n03710637"])
    tiny = json.loads((ref / "support" / "tinyimagenet_refined_labels.json").read_text())
    tw = meta("tinyimagenet")["raw_classes"]
    assert sorted(tiny) == tw
    put("tinyimagenet", [tiny[w]["clean_name"] for w in tw], PLAIN,
        "support/tinyimagenet_refined_labels.json clean_name by WordNet id")
    c101 = list(meta("caltech101")["raw_classes"])
    assert c101[:2] == ["Faces", "Faces_easy"]
    put("caltech101", ["person", "person"] + c101[2:], PLAIN,
        "raw 101_ObjectCategories folder names, Faces and Faces_easy both renamed 'person' "
        "(code/replace/datasets/caltech.py clip_categories)",
        notes="reference bug kept on purpose: classes 0 (Faces) and 1 (Faces_easy) get the same prompt, so their "
              "logits always tie; counterclip's argmax picks class 0, so Faces_easy images are never counted "
              "correct (the reference's topk leaves the tie-break unspecified)")
    put("caltech256", [clean(c[4:].replace("-101", "")).strip() for c in meta("caltech256")["raw_classes"]],
        "A photo of a {}.", "folder names without the 'NNN.' prefix and '-101', lower-cased, '_'/'-' -> ' ' "
        "(code/replace/datasets/caltech.py)")
    put("oxford-pets", [clean(c) for c in meta("oxford-pets")["raw_classes"]], "A photo of a {}, a type of pet.",
        "torchvision's title-cased breed names, lower-cased, '_'/'-' -> ' ' (oxford_iiit_pet.py)")
    flowers = literal(ds / "flowers102.py", "_classes")
    put("flowers102", [clean(c) for c in flowers], "A photo of a {}, a type of flower.",
        "the reference's own name list (flowers102.py _classes), lower-cased, '_'/'-' -> ' ' (trailing spaces "
        "and the '?' of 'pink-yellow dahlia?' kept)")
    put("fgvc-aircraft", [("Boeing " + c if c[0] == "7" else c).lower().replace("_", " ")
                          for c in meta("fgvc-aircraft")["raw_classes"]], "A photo of a {}, a type of aircraft.",
        "variants.txt names, 'Boeing ' prefixed to 7x7 variants, lower-cased, '_' -> ' ', hyphens kept "
        "(fgvc_aircraft.py)")
    put("stanford-cars", [clean(c[:-5]) for c in meta("stanford-cars")["raw_classes"]], "A photo of a {}.",
        "cars_meta.mat names without the year (name[:-5]), lower-cased, '_'/'-' -> ' ' (stanford_cars.py)")
    slash = {s.replace("/", "_"): s for s in SUN397_WITH_SLASH}
    sun = [slash.get(c, c) for c in meta("sun397")["raw_classes"]]
    assert len(set(sun)) == 397 and sum("/" in s for s in sun) == len(SUN397_WITH_SLASH)
    put("sun397", sun, PLAIN, "ClassName.txt entries without the '/x/' prefix, unchanged: underscores and the "
        "'a/b' path form kept (sun397.py .classes, code/utils.py get_text_prompts_val)")
    codes, countries = country_names()
    put("country211", countries, "A photo I took in {}.",
        "pycountry 24.6.1 country.name by ISO code (XK = 'Kosovo'), '_'/'-' -> ' ', case kept (country211.py)",
        raw_classes=codes)
    put("food101", [clean(c) for c in meta("food101")["raw_classes"]], "A photo of {}, a type of food.",
        "sorted meta class names, lower-cased, '_'/'-' -> ' ' (food101.py)")
    euro = literal(ds / "eurosat.py", "idx_to_class")
    put("eurosat", [clean(euro[i]) for i in range(10)], "A centered satellite photo of {}.",
        "the reference's own names with articles (eurosat.py idx_to_class)")
    put("dtd", [clean(c) for c in meta("dtd")["raw_classes"]], "A surface with a {} texture.",
        "label-file class names, lower-cased, '_'/'-' -> ' ' ('polka-dotted' -> 'polka dotted') (dtd.py)")
    pcam = literal(ds / "pcam.py", "clip_prompts")
    prefix = "This is a photo of a "
    assert all(p.startswith(prefix) and p.endswith(".") for p in pcam)
    put("pcam", [p[len(prefix):-1] for p in pcam], PLAIN, "the two fixed sentences of pcam.py clip_prompts")
    for key, rec in out.items():
        if key in ("imagenet", "pcam"):
            continue
        assert rec["num_classes"] == meta(key)["num_classes"], key
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    out_dir = META / "reference"
    out_dir.mkdir(exist_ok=True)
    for key, rec in build(Path(argv[0])).items():
        (out_dir / (key.replace("-", "_") + ".json")).write_text(json.dumps(rec, indent=1, ensure_ascii=False)
                                                                 + "\n", encoding="utf-8")
    print(f"wrote {len(list(out_dir.glob('*.json')))} files to {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
