"""The support matrix (repadapter_lab.benchmarks.support): every family x placement x groups x input
size, merged vs unmerged, strict load into the vanilla model, parameter count, unmerge, reload."""

import pytest

from repadapter_lab.benchmarks.support import TOL, UNMERGE_TOL, check, matrix

pytest.importorskip("open_clip")
pytest.importorskip("transformers")

CASES = matrix()


@pytest.mark.parametrize("case, placement, groups", CASES, ids=[f"{c.id}-{p}-g{g}" for c, p, g in CASES])
def test_family_placement_groups_at_every_size(case, placement, groups):
    row = check(case, placement, groups)
    assert min(row["changed"].values()) > 1e-4  # the adapters do change the function
    assert row["reload_equal"]
    if placement == "dwconv":
        assert not row["mergeable"] and "placement 'dwconv'" in row["merge_error"]
        return
    assert row["mergeable"] and row["strict_load"] and row["same_param_count"]
    assert set(row["max_abs_diff"]) == {f"{h}x{w}" for h, w in case.sizes}
    assert row["max_abs_diff_all"] <= TOL * max(1.0, row["output_scale"])
    assert row["unmerge_rel_error"] <= UNMERGE_TOL
