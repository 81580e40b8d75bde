import json

from repadapter.provenance import provenance, write_result


def test_results_record_how_they_were_made(tmp_path):
    path = write_result(tmp_path / "r.json", {"value": 1.5})
    data = json.loads(path.read_text())
    assert data["value"] == 1.5
    record = data["provenance"]
    assert set(record) >= {"command", "git_commit", "date_utc", "machine", "versions"}
    assert record["versions"]["torch"] and record["versions"]["timm"]
    assert record["machine"]["cpu_count"] >= 1


def test_provenance_names_the_commit_when_run_from_a_checkout():
    commit = provenance()["git_commit"]
    assert commit is None or len(commit) == 40
