"""Train / validation / held-out splits by episode, never by transition.

Each episode's split comes from a hash of its content and the split seed, so it depends
on nothing else in the file: appending episodes or merging trace files never moves an
old episode into training, and held-out episodes stay held out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from tasks.config import config, option
from tasks.errors import InputError
from tasks.episodes import Episodes

SPLIT_NAMES = ("train", "validation", "heldout")


@config
class SplitFractions:
    """Expected share of episodes in each split; they must sum to one."""

    train: float = option(0.8, min=0, max=1)
    validation: float = option(0.1, min=0, max=1)
    heldout: float = option(0.1, min=0, max=1)

    def __post_init__(self):
        shares = (self.train, self.validation, self.heldout)
        if not np.isclose(sum(shares), 1.0):
            raise ValueError(f"split fractions must sum to 1, got {shares}")

    @classmethod
    def rest_for_training(cls, validation: float, heldout: float) -> SplitFractions:
        """The shares kept for validation and held out; training gets what is left."""
        return cls(train=1.0 - validation - heldout, validation=validation, heldout=heldout)


def split_of(content_id: str, split_seed: int, fractions: SplitFractions = SplitFractions()) -> str:
    """The split (``train``, ``validation`` or ``heldout``) of one episode."""
    digest = hashlib.blake2b(f"{split_seed}:{content_id}".encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "little") / 2**64
    if position < fractions.train:
        return "train"
    if position < fractions.train + fractions.validation:
        return "validation"
    return "heldout"


def split_indices(
    episodes: Episodes, split_seed: int = 0, fractions: SplitFractions = SplitFractions()
) -> dict[str, np.ndarray]:
    """Episode indices of each split, in file order."""
    return split_indices_of_ids(episodes.content_ids(), split_seed, fractions)


def split_indices_of_ids(
    content_ids: Sequence[str], split_seed: int = 0, fractions: SplitFractions = SplitFractions()
) -> dict[str, np.ndarray]:
    """Indices of each split among episodes known by their content ids, in their order."""
    labels = np.array([split_of(cid, split_seed, fractions) for cid in content_ids])
    return {name: np.flatnonzero(labels == name) for name in SPLIT_NAMES}


def fitting_episodes(
    episodes: Episodes, split_seed: int = 0, fractions: SplitFractions = SplitFractions()
) -> tuple[Episodes | None, Episodes | None]:
    """The train and validation episodes: everything a model may be fitted or stopped on.

    Held-out episodes are never returned here; only evaluation reads them, through
    `heldout_episodes`. A split with no episodes comes back as None.
    """
    indices = split_indices(episodes, split_seed, fractions)
    return tuple(  # type: ignore[return-value]
        episodes.select(indices[name]) if len(indices[name]) else None
        for name in ("train", "validation")
    )


def split_record(split_seed: int, fractions: SplitFractions) -> dict:
    """How a saved model or policy records the split it was fitted on (``model.json``, ``policy.json``)."""
    return {"seed": split_seed, "train": fractions.train, "validation": fractions.validation,
            "heldout": fractions.heldout}


def recorded_split(spec: dict, shown: str) -> tuple[int, SplitFractions]:
    """The split seed and fractions a saved model or policy was fitted with.

    Files written before the fractions were recorded hold only ``split_seed``; the
    fractions every command used then (80/10/10) are assumed for them.

    Raises:
        InputError: naming ``shown``, if the recorded split is malformed.
    """
    split = spec.get("split")
    if split is None:
        seed = spec.get("split_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(shown, f"is damaged: split_seed should be an integer, got {seed!r}")
        return seed, SplitFractions()
    try:
        return int(split["seed"]), SplitFractions(train=float(split["train"]), validation=float(split["validation"]),
                                                  heldout=float(split["heldout"]))
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(shown, f"is damaged: its split record {split!r} is not valid ({error})") from None


def describe_split(split_seed: int, fractions: SplitFractions) -> str:
    return (f"split seed {split_seed}, {fractions.train:.0%} train / {fractions.validation:.0%} validation / "
            f"{fractions.heldout:.0%} held out")


def heldout_episodes(
    episodes: Episodes, split_seed: int = 0, fractions: SplitFractions = SplitFractions()
) -> Episodes | None:
    """The held-out episodes, for evaluation only; None if there are none."""
    indices = split_indices(episodes, split_seed, fractions)["heldout"]
    return episodes.select(indices) if len(indices) else None
