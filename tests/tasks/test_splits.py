import numpy as np

from tasks.episodes import Episode, Episodes
from tasks.splits import SPLIT_NAMES, fitting_episodes, heldout_episodes, split_indices, split_of


def _episodes(count, offset=0):
    return Episodes.from_list([
        Episode(
            observations=np.full((4, 2), i, dtype=np.float32),
            actions=np.zeros((3, 1), dtype=np.float32),
            rewards=np.full(3, i, dtype=np.float32),
            terminations=np.array([False, False, True]),
            truncations=np.zeros(3, dtype=bool),
        )
        for i in range(offset, offset + count)
    ])


def _split_by_id(episodes, split_seed=0):
    ids = episodes.content_ids()
    return {ids[i]: name for name, indices in split_indices(episodes, split_seed).items() for i in indices}


def test_split_is_stable_when_episodes_are_appended():
    before = _split_by_id(_episodes(40))
    after = _split_by_id(_episodes(40).concatenate(_episodes(60, offset=40)))
    assert all(after[cid] == split for cid, split in before.items())


def test_split_is_stable_when_files_are_merged_in_any_order():
    a, b = _episodes(30), _episodes(30, offset=30)
    merged_ab, merged_ba = _split_by_id(a.concatenate(b)), _split_by_id(b.concatenate(a))
    assert merged_ab == merged_ba == {**_split_by_id(a), **_split_by_id(b)}


def test_split_depends_on_content_not_position():
    episodes = _episodes(50)
    reversed_order = episodes.select(list(range(49, -1, -1)))
    assert _split_by_id(episodes) == _split_by_id(reversed_order)


def test_split_fractions_are_close_to_80_10_10():
    counts = {name: 0 for name in SPLIT_NAMES}
    for i in range(20000):
        counts[split_of(f"episode-{i}", split_seed=0)] += 1
    assert abs(counts["train"] / 20000 - 0.8) < 0.01
    assert abs(counts["validation"] / 20000 - 0.1) < 0.01
    assert abs(counts["heldout"] / 20000 - 0.1) < 0.01


def test_another_split_seed_gives_another_split():
    episodes = _episodes(100)
    assert _split_by_id(episodes, 0) != _split_by_id(episodes, 1)


def test_fitting_episodes_never_include_heldout_ones():
    episodes = _episodes(200)
    heldout = set(heldout_episodes(episodes).content_ids())
    train, validation = fitting_episodes(episodes)
    fitted = set(train.content_ids()) | set(validation.content_ids())
    assert heldout and not heldout & fitted
    assert len(heldout) + len(fitted) == 200
