import pytest

from repadapter.families.factory import IN_HOUSE_VIT, WEIGHTS_DIR
from repadapter_lab.demo import DemoSettings, run_demo

pytestmark = pytest.mark.skipif(
    not (WEIGHTS_DIR / f"{IN_HOUSE_VIT}.safetensors").is_file(), reason="in-house ViT weights not built"
)


def test_main_job_trains_merges_exactly_and_keeps_the_size(tmp_path):
    lines: list[str] = []
    settings = DemoSettings(
        data_root=str(tmp_path / "offline"),
        train_images=32,
        val_images=8,
        test_images=40,
        epochs=2,
        batch_size=8,
        latency_rounds=2,
    )
    result = run_demo(settings, log=lines.append)
    assert result["max_abs_logit_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]) == result["merge_bound"]
    assert any("within" in line for line in lines if "merged vs unmerged" in line)
    assert result["test_accuracy"]["merged"] == pytest.approx(result["test_accuracy"]["repadapter"])
    assert result["parameters"]["merged"] == result["parameters"]["base"]
    trained = result["trained_parameters"]
    assert trained["linear"] < trained["repadapter"] == trained["adapter"] + trained["linear"]
    assert 0 < result["adapter_file_bytes"] < 1_000_000
    assert set(result["latency_batch1"]) == {"base", "merged", "unmerged"}
    assert lines[0].startswith("[1/5]") and any(line.startswith("\nREPORT") for line in lines)
    assert (tmp_path / "offline" / "clevr_count" / "test.txt").read_text().count("\n") == 40
