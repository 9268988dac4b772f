"""The one recommendation path: `build_pipeline` wires the stages once; `Pipeline.recommend` runs
lookup → retrieve → rank (with its fallback) → explain for every entry point (CLI, chat tools, harness)."""

from llmrec.pipeline.build import build_index, build_pipeline, make_engine
from llmrec.pipeline.recommend import Pipeline, popular_diverse

__all__ = ["Pipeline", "build_index", "build_pipeline", "make_engine", "popular_diverse"]
