"""`repadapter bench latency` on small models: every deploy form timed against the base."""

import json

from repadapter.cli import main


def test_latency_bench_times_every_deploy_form_against_the_base(tmp_path, capsys):
    out = tmp_path / "latency"
    args = ["bench", "latency", "--models", "vit_tiny6_patch4_32", "convnext_atto", "--batches", "1", "2"]
    assert main([*args, "--rounds", "4", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads((out / "latency.json").read_text())
    vit = result["models"]["vit_tiny6_patch4_32"]
    assert set(vit["forms"]) == {
        "base",
        "repadapter merged",
        "repadapter unmerged",
        "lora merged",
        "ssf merged",
        "fact-tt merged",
        "adapter",
        "adaptformer",
        "vpt-deep",
    }
    base = vit["forms"]["base"]
    for name, form in vit["forms"].items():
        assert set(form["ratio_to_base"]) == {"1", "2"} and form["latency"]["2"]["rounds"] == 3
        if name.endswith("merged") and "unmerged" not in name:  # the vanilla architecture again
            assert form["params"] == base["params"] and form["gflops"] == base["gflops"]
    assert vit["forms"]["base"]["ratio_to_base"] == {"1": 1.0, "2": 1.0}
    for added in ("repadapter unmerged", "adapter", "adaptformer", "vpt-deep"):
        assert vit["forms"][added]["gflops"] > base["gflops"]
    convnext = result["models"]["convnext_atto"]
    assert set(convnext["forms"]) == {"base", "repadapter merged", "repadapter unmerged"}
    assert "has none" in convnext["skipped"]["lora"] and "vpt-deep" in convnext["skipped"]
    text = (out / "latency.md").read_text()
    assert "### vit_tiny6_patch4_32 (3x32x32, 1 CPU threads)" in text and "| vpt-deep |" in text
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert result["provenance"]["command"]
