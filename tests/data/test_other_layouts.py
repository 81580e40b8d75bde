import pytest

from repadapter import RepAdapterError
from repadapter.data import load_task
from repadapter.data.fewshot import load_fewshot_task
from tests.fixtures import make_csv_folder, make_fewshot_dataset, make_image_folder


def test_fewshot_layout(tmp_path):
    folder = make_fewshot_dataset(tmp_path, "standford_cars", shots=2, seed=1, classes=3, test=6)
    task = load_fewshot_task(folder, shots=2, seed=1)
    assert task.name == "stanford_cars_2shot_seed1" and task.num_classes == 196
    assert len(task.split("train")) == 6 and len(task.split("test")) == 6
    assert "val" not in task.splits
    with pytest.raises(RepAdapterError, match="num_shot_4.seed_1 does not exist"):
        load_fewshot_task(folder, shots=4, seed=1)
    with pytest.raises(RepAdapterError, match="shots in \\(1, 2, 4, 8, 16\\)"):
        load_fewshot_task(folder, shots=3, seed=1)


def test_image_folder_and_csv_give_the_same_task(tmp_path):
    folder = load_task(f"folder:{make_image_folder(tmp_path / 'f')}")
    table = load_task(f"csv:{make_csv_folder(tmp_path / 'c')}")
    for task in (folder, table):
        assert task.class_names == ("cat", "dog") and task.num_classes == 2
        assert {k: len(v) for k, v in task.splits.items()} == {
            "train": 8,
            "val": 8,
            "test": 8,
            "trainval": 16,
        }
        assert sorted({s.label for s in task.split("test")}) == [0, 1]


def test_folder_and_csv_errors(tmp_path):
    root = make_image_folder(tmp_path / "f")
    (root / "val" / "bird").mkdir()
    with pytest.raises(RepAdapterError, match="class 'bird' is not among the train classes"):
        load_task(f"folder:{root}")
    csv_root = make_csv_folder(tmp_path / "c")
    (csv_root / "val.csv").write_text("file,class\nx.png,cat\n")
    with pytest.raises(RepAdapterError, match="val.csv:1: expected the header 'path,label'"):
        load_task(f"csv:{csv_root}")
    (csv_root / "val.csv").write_text("path,label\nimg/missing.png,cat\n")
    with pytest.raises(RepAdapterError, match="val.csv:2: image .*missing.png does not exist"):
        load_task(f"csv:{csv_root}")


@pytest.mark.parametrize("spec", ["cifar", "imagenet:/data", "vtab:"])
def test_data_specs_must_name_a_kind_and_path(spec):
    with pytest.raises(RepAdapterError, match="is not 'kind:path'"):
        load_task(spec)
