"""`repadapter data check vtab` on a VTAB-1k tree with planted faults, through the CLI."""

import json
import shutil
import subprocess
import sys

import pytest

from repadapter.training.data.vtab_check import check_vtab
from tests.fixtures import make_vtab_task


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "repadapter.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """cifar as it should be; eurosat with 199 val images; dtd with a truncated image and a label
    out of range; kitti missing."""
    root = tmp_path_factory.mktemp("vtab") / "vtab-1k"
    make_vtab_task(root, "cifar", train=800, val=200, test=30, classes=100)
    make_vtab_task(root, "eurosat", train=800, val=199, test=20, classes=10)
    dtd = make_vtab_task(root, "dtd", train=800, val=200, test=20, classes=47)
    image = dtd / "images" / "test_0003.png"
    image.write_bytes(image.read_bytes()[:-40])
    test_list = (
        (dtd / "test.txt").read_text().replace("images/test_0005.png 5\n", "images/test_0005.png 47\n")
    )
    (dtd / "test.txt").write_text(test_list)
    return root


def test_a_sound_task_passes_and_is_fingerprinted(tree, tmp_path):
    out = tmp_path / "check.json"
    run = cli("data", "check", "vtab", str(tree), "--tasks", "cifar", "--json", str(out), "--image-bytes")
    assert run.returncode == 0, run.stderr
    assert (
        "cifar                  ok      train/val/trainval/test 800/200/1000/30, 100/100 classes"
        in run.stdout
    )
    assert "all tasks ok" in run.stdout
    report = json.loads(out.read_text())
    cifar = report["tasks"]["cifar"]
    assert cifar["splits"]["train"]["class_counts"]["0"] == 8 and cifar["splits"]["test"]["size"] == 30
    assert cifar["images"]["formats"] == {"PNG": 1030} and cifar["images"]["most_common_size"] == [16, 16]
    assert f"fingerprint of the lists: {report['lists_sha256']}" in run.stdout


def test_planted_faults_are_each_reported_and_fail_the_check(tree, tmp_path):
    out = tmp_path / "check.json"
    run = cli(
        "data", "check", "vtab", str(tree), "--tasks", "cifar", "eurosat", "dtd", "kitti", "--json", str(out)
    )
    assert run.returncode == 2
    assert (
        "3 task(s) of" in run.stderr and "eurosat, dtd, kitti" in run.stderr and "Traceback" not in run.stderr
    )
    assert "kitti                  MISSING" in run.stdout
    tasks = json.loads(out.read_text())["tasks"]
    assert tasks["cifar"]["problems"] == []
    assert tasks["eurosat"]["problems"] == [
        "val200.txt lists 199 images, expected 200",
        "train800val200.txt lists 999 images, expected 1000",
    ]
    dtd = tasks["dtd"]["problems"]
    assert "test.txt:6: label 47 is out of range for 47 classes" in dtd
    assert any(p.startswith("images/test_0003.png does not decode") for p in dtd) and len(dtd) == 2
    assert tasks["dtd"]["images"]["undecodable"] == ["images/test_0003.png"]
    assert tasks["kitti"] == {"present": False, "problems": [f"task folder {tree / 'kitti'} is missing"]}
    # the whole suite: the 16 tasks this tree lacks are reported missing
    run = cli("data", "check", "vtab", str(tree), "--quiet")
    assert run.returncode == 2 and run.stdout.count("MISSING") == 16


def test_fingerprints_tell_whether_two_trees_hold_the_same_lists(tree, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tree / "cifar", copy / "cifar")
    lines = (copy / "cifar" / "train800.txt").read_text().splitlines()
    (copy / "cifar" / "train800.txt").write_text("\r\n".join(reversed(lines)) + "\r\n")  # order, endings
    ours = check_vtab(tree, ["cifar"], image_bytes=True, progress=False)
    theirs = check_vtab(copy, ["cifar"], image_bytes=True, progress=False)
    assert ours["lists_sha256"] == theirs["lists_sha256"]
    assert ours["tasks"]["cifar"]["images_sha256"] == theirs["tasks"]["cifar"]["images_sha256"]
    relabelled = (
        (copy / "cifar" / "test.txt").read_text().replace("images/test_0001.png 1", "images/test_0001.png 2")
    )
    (copy / "cifar" / "test.txt").write_text(relabelled)
    assert check_vtab(copy, ["cifar"], progress=False)["lists_sha256"] != ours["lists_sha256"]
    (copy / "cifar" / "test.txt").write_text((tree / "cifar" / "test.txt").read_text())
    (copy / "cifar" / "images" / "test_0002.png").write_bytes(
        (tree / "cifar" / "images" / "test_0004.png").read_bytes()
    )
    changed = check_vtab(copy, ["cifar"], image_bytes=True, progress=False)
    assert changed["lists_sha256"] == ours["lists_sha256"]  # same lists ...
    assert (
        changed["tasks"]["cifar"]["images_sha256"] != ours["tasks"]["cifar"]["images_sha256"]
    )  # ... other pixels
