import pytest
import torch

from repadapter import RepAdapterError
from repadapter.training.data.lists import ImageListDataset, few_shot, read_list
from repadapter.training.data.vtab import load_vtab_task
from tests.fixtures import make_vtab_task


def test_lists_read_paths_relative_to_the_task_folder(tmp_path):
    folder = make_vtab_task(tmp_path, "dtd", train=4)
    samples = read_list(folder / "train800.txt", folder, num_classes=47)
    assert [s.label for s in samples] == [0, 1, 0, 1]
    assert samples[2].path == folder / "images" / "train_0002.png"
    assert samples[2].origin == f"{folder / 'train800.txt'}:3"


@pytest.mark.parametrize(
    "line, message",
    [
        ("images/train_0000.png", "train800.txt:2: expected 'relative/path label'"),
        ("images/train_0000.png cat", "train800.txt:2: expected 'relative/path label'"),
        ("images/train_0000.png 47", "train800.txt:2: label 47 is out of range for 47 classes"),
        ("images/missing.png 1", "train800.txt:2: image .*missing.png does not exist"),
        ("notes.txt 1", "train800.txt:2: .*notes.txt is not a readable image"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, line, message):
    folder = make_vtab_task(tmp_path, "dtd", train=2)
    (folder / "notes.txt").write_text("not an image")
    first = (folder / "train800.txt").read_text().splitlines()[0]
    (folder / "train800.txt").write_text(f"{first}\n{line}\n")
    with pytest.raises(RepAdapterError, match=message):
        read_list(folder / "train800.txt", folder, num_classes=47)


def test_empty_and_missing_lists_are_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(RepAdapterError, match="has no samples"):
        read_list(tmp_path / "empty.txt", tmp_path)
    with pytest.raises(RepAdapterError, match="missing.txt does not exist"):
        read_list(tmp_path / "missing.txt", tmp_path)


def test_dataset_decodes_rgb_and_names_images_it_cannot_decode(tmp_path):
    folder = make_vtab_task(tmp_path, "dtd", train=2)
    samples = read_list(folder / "train800.txt", folder)
    dataset = ImageListDataset(samples, lambda image: torch.tensor(image.size))
    assert dataset[1][1] == 1 and dataset[1][0].tolist() == [16, 16]
    data = samples[0].path.read_bytes()
    samples[0].path.write_bytes(data[:60])  # the header survives, the pixels do not
    with pytest.raises(RepAdapterError, match="train800.txt:1: cannot decode"):
        dataset[0]


def test_few_shot_draws_k_images_per_class_from_train_and_val_by_seed(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=40, val=20, test=12, classes=10))
    drawn = few_shot(task, 3, 0)
    train = drawn.split("train")
    assert drawn.name == "eurosat_3shot_seed0" and sorted(drawn.splits) == ["test", "train", "trainval"]
    assert drawn.split("trainval") == train and drawn.split("test") == task.split("test")
    assert sorted(s.label for s in train) == sorted(list(range(10)) * 3)
    pool = {s.path for s in task.split("trainval")}
    assert {s.path for s in train} <= pool and len({s.path for s in train}) == 30
    assert few_shot(task, 3, 0).split("train") == train  # the same seed draws the same images
    assert few_shot(task, 3, 1).split("train") != train
    with pytest.raises(RepAdapterError, match="fewer than --shots 7 training images in 10 class"):
        few_shot(task, 7, 0)
    with pytest.raises(RepAdapterError, match="at least 1"):
        few_shot(task, 0, 0)
    with pytest.raises(RepAdapterError, match="--fewshot-seed must be 0 or more"):
        few_shot(task, 3, -1)
