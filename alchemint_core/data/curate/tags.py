"""The paper's rules for entity tags (appendix I.1), enforced on any list of tags — given in the captions file or
extracted by a language model: each tag is an exact phrase of the caption, physically groundable (no body parts,
groups, whole scenes, text or places), and unique. The language model's own prompts live in prompts.toml."""
from __future__ import annotations

from pathlib import Path

import tomllib

from ..dataset import mentions

PROMPTS_FILE = Path(__file__).with_name("prompts.toml")
BODY_PARTS = {"arm", "arms", "leg", "legs", "hand", "hands", "foot", "feet", "head", "face", "eye", "eyes", "ear",
              "ears", "nose", "mouth", "finger", "fingers", "hair", "shoulder", "shoulders", "knee", "knees"}
GROUPS = {"people", "crowd", "group", "team", "audience", "family", "herd", "flock"}
NOT_GROUNDABLE = {"scene", "background", "foreground", "area", "left", "right", "top", "bottom", "side", "middle",
                  "view", "shot", "camera", "frame", "image", "video", "text", "letter", "letters", "word", "words",
                  "sky", "room", "place", "air"}
BLACKLIST = BODY_PARTS | GROUPS | NOT_GROUNDABLE


def head_word(tag: str) -> str:
    """The phrase's last word (English noun phrases end in their head noun)."""
    return tag.split()[-1].lower() if tag.split() else ""


def apply_rules(caption: str, tags: list[str]) -> tuple[list[str], dict[str, str]]:
    """(kept tags in order, {dropped tag: why}) under the paper's rules."""
    kept, dropped = [], {}
    for raw in tags:
        tag = " ".join(str(raw).split())
        if not tag:
            continue
        if not mentions(caption, tag):
            dropped[tag] = "not a phrase of the caption"
        elif head_word(tag) in BLACKLIST:
            dropped[tag] = "not a physically groundable entity (body part, group, scene, place or text)"
        elif tag.lower() in (k.lower() for k in kept):
            dropped[tag] = "given twice"
        else:
            kept.append(tag)
    return kept, dropped


def prompts() -> dict[str, str]:
    """The language model's prompt texts: 'extract' (first pass) and 'filter' (the second pass)."""
    return tomllib.loads(PROMPTS_FILE.read_text(encoding="utf-8"))
