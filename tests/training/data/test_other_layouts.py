import pytest

from repadapter import RepAdapterError
from repadapter.training.data import load_task
from repadapter.training.data.fewshot import load_fewshot_task
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


@pytest.mark.parametrize("spec", ["cifar", "places365:/data", "vtab:"])
def test_data_specs_must_name_a_kind_and_path(spec):
    with pytest.raises(RepAdapterError, match="is not 'kind:path'"):
        load_task(spec)


def _rows(root, split, *labels):
    (root / f"{split}.csv").write_text(
        "path,label\n" + "".join(f"img/{split}_cat_{i}.png,{label}\n" for i, label in enumerate(labels))
    )


def test_csv_labels_are_class_ids_or_names_and_every_class_is_trained(tmp_path):
    root = make_csv_folder(tmp_path / "c", labels=("0", "1"), per_class=2)
    task = load_task(f"csv:{root}")
    assert task.num_classes == 2 and [s.label for s in task.split("train")] == [0, 0, 1, 1]
    _rows(root, "train", 0, 1, -1, 1)
    with pytest.raises(RepAdapterError, match=r"train.csv:4: label -1 is not a class id"):
        load_task(f"csv:{root}")
    _rows(root, "train", 0, 1, "cat", 1)
    with pytest.raises(RepAdapterError, match=r"train.csv:4: label 'cat' is a class name but .*train.csv:2"):
        load_task(f"csv:{root}")
    _rows(root, "train", 0, 2, 0, 2)
    with pytest.raises(RepAdapterError, match=r"train.csv: no training row has class id 1"):
        load_task(f"csv:{root}")
    _rows(root, "train", 0, 1, 0, 1)
    _rows(root, "test", 0, 1, 2, 1)
    with pytest.raises(RepAdapterError, match=r"test.csv:4: class '2' has no training row in .*train.csv"):
        load_task(f"csv:{root}")
    names = make_csv_folder(tmp_path / "n", labels=("cat", "dog"), per_class=2)
    _rows(names, "val", "cat", "bird")
    with pytest.raises(RepAdapterError, match=r"val.csv:3: class 'bird' has no training row"):
        load_task(f"csv:{names}")
