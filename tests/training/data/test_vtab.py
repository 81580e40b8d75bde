import pytest

from repadapter import RepAdapterError
from repadapter.training.data import VTAB_TASKS, load_vtab_task, paper_scale


def test_the_nineteen_tasks_in_three_groups():
    groups = [t.group for t in VTAB_TASKS.values()]
    assert len(VTAB_TASKS) == 19
    assert (groups.count("natural"), groups.count("specialized"), groups.count("structured")) == (7, 4, 8)
    assert VTAB_TASKS["sun397"].num_classes == 397 and VTAB_TASKS["smallnorb_ele"].num_classes == 9


def test_official_scales_per_placement():
    assert paper_scale("caltech101", "block") == 5 and paper_scale("caltech101", "attn") == 10
    assert paper_scale("resisc45", "block") == 5 and paper_scale("resisc45", "attn") == 0.1
    assert paper_scale("dsprites_ori", "attn") == 5


def test_a_task_folder_loads_all_four_splits(tmp_path):
    from tests.fixtures import make_vtab_task

    task = load_vtab_task(make_vtab_task(tmp_path, "kitti", train=8, val=4, test=6))
    assert task.num_classes == 4 and task.group == "structured"
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 8, "val": 4, "trainval": 12, "test": 6}


def test_layout_errors_say_what_is_expected(tmp_path):
    with pytest.raises(RepAdapterError, match="VTAB-1k task folder .*nope does not exist; expected layout"):
        load_vtab_task(tmp_path / "nope")
    (tmp_path / "imagenet").mkdir()
    with pytest.raises(RepAdapterError, match="unknown task 'imagenet'"):
        load_vtab_task(tmp_path / "imagenet")
    (tmp_path / "svhn").mkdir()
    with pytest.raises(RepAdapterError, match="split list .*svhn/train800.txt does not exist"):
        load_vtab_task(tmp_path / "svhn")
