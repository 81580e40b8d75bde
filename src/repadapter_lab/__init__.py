"""The lab: benchmarks, the offline suite's data-set builders, the in-house pretraining and the
demo. It uses the library; the library never imports it."""
