"""The objective registry: every entry resolves to its ranker builder and its trainer, one file name per objective."""

from __future__ import annotations

import pytest

from llmrec import objectives
from llmrec.errors import AdapterMismatch
from llmrec.objectives import Objective, TrainRequest


@pytest.mark.parametrize("name", sorted(objectives.OBJECTIVES))
def test_every_objective_resolves_to_its_ranker_and_trainer_in_files_of_its_own_name(name):
    objective = objectives.get(name)
    assert callable(objective.build_ranker()) and callable(objective.train())
    assert objective.ranker.startswith(f"llmrec.ranking.{name}:")
    assert objective.trainer.startswith(f"llmrec.adapters.{name}:")


def test_an_unknown_objective_is_a_clear_adapter_error():
    with pytest.raises(AdapterMismatch, match="unknown objective 'telepathy'.*embedding, listwise, pointwise, sequence"):
        objectives.get("telepathy")


def test_a_second_objective_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="registered already"):
        objectives.register(Objective("listwise", "again", "x:y", "x:y", vllm_lora=True, explains=True))


def test_only_lora_objectives_go_to_vllm_and_only_listwise_writes_explanations():
    assert {n for n, o in objectives.OBJECTIVES.items() if o.vllm_lora} == {"listwise", "pointwise", "sequence"}
    assert {n for n, o in objectives.OBJECTIVES.items() if o.explains} == {"listwise"}


def test_a_train_request_refuses_negative_steps_with_the_field_named():
    with pytest.raises(ValueError, match="encoder_lora_steps"):
        TrainRequest(scenario="movies", encoder_lora_steps=-1)
