"""Stage 2 of the `embedding` objective: real PEFT LoRA on SmolLM2's item-encoder blocks, a few real steps.

The tiny ML-100K scenario (first 40 users) from `llmrec.testing.tiny_home`; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmrec.adapters.embedding import EmbeddingTrainConfig, train_towers
from llmrec.adapters.encoder_lora import LORA_FOLDER, EncoderLoraConfig, train_encoder_lora
from llmrec.engines.encoder import ItemEncoderConfig, item_vectors
from llmrec.errors import AdapterMismatch
from llmrec.manifest import read_manifest
from llmrec.ranking.embedding import EmbeddingRanker, load_embedding_ranker
from llmrec.scenario import AdapterSpec, load_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory, home, model_dir):
    from llmrec.testing import tiny_home as build

    return build(tmp_path_factory.mktemp("encoder-lora-home"), home, 40)


@pytest.fixture(scope="module")
def data(tiny_home):
    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit

    dataset = load_dataset(str(tiny_home / "tiny"), tiny_home)
    return dataset, LeaveOneOutSplit.from_dataset(dataset)


@pytest.fixture(scope="module")
def stage_two(tiny_home, model_dir, data):
    """Stage 1 (one seed, one epoch), then 3 encoder-LoRA steps at a high learning rate, keeping the last state."""
    dataset, split = data
    encoder = ItemEncoderConfig(dtype="float32")
    items = list(dataset.items.values())
    vectors = item_vectors(model_dir, items, tiny_home, encoder, progress=False)
    stage1 = train_towers(vectors, split, EmbeddingTrainConfig(epochs=1, seeds=1), progress=False)
    config = EncoderLoraConfig(steps=3, batch_size=256, learning_rate=1e-2, validate_every=2, keep="last")
    two = train_encoder_lora(model_dir, items, vectors, stage1.tower, split, encoder, config, progress=False)
    return vectors, stage1, two, encoder


def test_training_moves_the_item_vectors_and_records_its_curve(stage_two):
    vectors, _, two, _ = stage_two
    manifest = two.manifest
    assert manifest["steps_done"] == 3 and len(manifest["loss_curve"]) == 3 and manifest["kept"] and manifest["best_step"] == 3
    assert [c["step"] for c in manifest["valid_curve"]] == [0, 2, 3] and manifest["blocks"] == [14, 15]  # below SmolLM2's pooled layer 16
    assert manifest["trainable_parameters"] > 0 and manifest["dtype"] == "float32"
    assert two.matrix.shape == vectors.matrix.shape
    assert np.abs(two.matrix - vectors.matrix).max() > 1e-2  # the LoRA changed what the encoder says


def test_the_saved_peft_folder_serves_the_vectors_training_validated(stage_two, tiny_home, model_dir, data, tmp_path):
    dataset, _ = data
    vectors, _, two, encoder = stage_two
    folder = tmp_path / LORA_FOLDER
    two.save(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).resolve() == Path(model_dir).resolve() and config["r"] == 8
    served = item_vectors(model_dir, list(dataset.items.values()), tiny_home, encoder, progress=False, lora=folder)
    # the full model with the PEFT folder applied == the cached-input window it was trained as
    assert np.allclose(served.matrix, two.matrix, atol=2e-3), np.abs(served.matrix - two.matrix).max()
    assert not np.allclose(served.matrix, vectors.matrix, atol=1e-2)  # and the cache key tells it from the frozen vectors


def test_cli_trains_both_stages_and_the_pipeline_serves_them(tiny_home, model_dir, data, capsys):
    from llmrec.entrypoints.cli import main

    assert main(["adapters", "train", "--objective", "embedding", "--epochs", "1", "--seeds", "1", "--encoder-lora-steps", "2",
                 "--home", str(tiny_home), "--model", model_dir, "--scenario", "tiny"]) == 0
    assert "encoder LoRA (" in capsys.readouterr().err
    scenario = load_scenario("tiny", tiny_home)
    folder = Path(scenario.adapter.path)
    manifest = read_manifest(folder)
    two = manifest["encoder_lora"]
    assert two["steps_done"] == 2 and two["config"]["blocks"] == 2
    assert (folder / LORA_FOLDER / "adapter_config.json").is_file() == two["kept"]
    assert main(["adapters", "list", "--home", str(tiny_home), "--model", model_dir]) == 0
    row = [r for r in capsys.readouterr().out.splitlines() if r.startswith("tiny\t")][0].split("\t")
    assert row[2] == ("embedding+encoder-lora" if two["kept"] else "embedding")
    dataset, _ = data
    ranker = load_embedding_ranker(scenario.adapter, model_dir, list(dataset.items.values()), tiny_home, 1.0, progress=False)
    assert isinstance(ranker, EmbeddingRanker)


def test_a_manifest_naming_a_missing_encoder_lora_is_refused(stage_two, tiny_home, model_dir, data, tmp_path):
    from llmrec.adapters.embedding import save_adapter

    dataset, _ = data
    _, _, two, encoder = stage_two
    manifest = {"objective": "embedding", "base_model": {"path": str(Path(model_dir).resolve())},
                "config": {"tower": two.tower.config.model_dump(), "encoder": encoder.model_dump()}, "encoder_lora": {"kept": True}}
    folder = save_adapter(tmp_path / "adapter", two.tower, manifest, two.save)
    spec = AdapterSpec(name="x", path=str(folder))
    load_embedding_ranker(spec, model_dir, list(dataset.items.values()), tiny_home, 1.0, progress=False)
    shutil.rmtree(folder / LORA_FOLDER)
    with pytest.raises(AdapterMismatch, match="encoder LoRA"):
        load_embedding_ranker(spec, model_dir, list(dataset.items.values()), tiny_home, 1.0, progress=False)


RESUMABLE = EncoderLoraConfig(steps=4, batch_size=256, learning_rate=1e-2, validate_every=1, keep="last")


def _stage_one(tiny_home, model_dir, data):
    dataset, split = data
    encoder = ItemEncoderConfig(dtype="float32")
    items = list(dataset.items.values())
    vectors = item_vectors(model_dir, items, tiny_home, encoder, progress=False)
    return items, vectors, train_towers(vectors, split, EmbeddingTrainConfig(epochs=1, seeds=1), progress=False).tower, encoder


def test_an_interrupted_run_resumes_to_the_same_result(tiny_home, model_dir, data, tmp_path):
    from llmrec.errors import TrainingConflict, TrainingInterrupted

    _, split = data
    items, vectors, tower, encoder = _stage_one(tiny_home, model_dir, data)
    whole = train_encoder_lora(model_dir, items, vectors, tower, split, encoder, RESUMABLE, progress=False)

    def stop_at_two(step, *_):
        if step == 2:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "encoder-lora.pt"
    with pytest.raises(TrainingInterrupted, match="interrupted at step 2 of 4.*--resume"):
        train_encoder_lora(model_dir, items, vectors, tower, split, encoder, RESUMABLE, progress=False, on_validated=stop_at_two,
                           checkpoint=checkpoint)
    with pytest.raises(TrainingConflict, match="another config"):
        train_encoder_lora(model_dir, items, vectors, tower, split, encoder, RESUMABLE.model_copy(update={"rank": 4}), progress=False,
                           checkpoint=checkpoint, resume=True)
    resumed = train_encoder_lora(model_dir, items, vectors, tower, split, encoder, RESUMABLE, progress=False, checkpoint=checkpoint,
                                 resume=True)
    assert resumed.manifest["resumed"] and resumed.manifest["steps_done"] == 4 and resumed.manifest["complete"]
    assert np.allclose(resumed.manifest["loss_curve"], whole.manifest["loss_curve"], atol=1e-4)
    assert [c["step"] for c in resumed.manifest["valid_curve"]] == [0, 1, 2, 3, 4]
    assert np.allclose(resumed.matrix, whole.matrix, atol=1e-4)
    with pytest.raises(TrainingConflict, match="no encoder-LoRA checkpoint"):
        train_encoder_lora(model_dir, items, vectors, tower, split, encoder, RESUMABLE, progress=False,
                           checkpoint=tmp_path / "missing.pt", resume=True)


def test_cli_time_budget_keeps_a_checkpoint_and_resume_publishes(tiny_home, model_dir, capsys):
    from llmrec.entrypoints.cli import main

    base = ["adapters", "train", "--objective", "embedding", "--epochs", "1", "--seeds", "1", "--encoder-lora-steps", "3",
            "--home", str(tiny_home), "--model", model_dir, "--scenario", "tiny"]
    folder = tiny_home / "scenarios" / "tiny" / "adapter-embedding"
    before = read_manifest(folder)  # the adapter an earlier test published
    assert main([*base, "--minutes", "0.0001"]) == 0
    err = capsys.readouterr().err
    assert "time budget reached at encoder-LoRA step 1 of 3" in err and "--resume" in err
    assert read_manifest(folder) == before  # unchanged
    resume_dir = folder.with_name(folder.name + ".resume")
    assert (resume_dir / "encoder-lora.pt").is_file() and (resume_dir / "stage1.safetensors").is_file()
    assert main([*base, "--resume"]) == 0
    manifest = read_manifest(folder)
    assert manifest["encoder_lora"]["resumed"] and manifest["encoder_lora"]["steps_done"] == 3 and not resume_dir.exists()
    assert main([*base, "--resume"]) == 10  # nothing left to resume: one line, exit 10
    assert "no stage-1 towers" in capsys.readouterr().err.strip().splitlines()[-1]
