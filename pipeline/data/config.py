"""Config of the `data` stage: which knowledge sets (worlds) to build, and at what size.

Each world is a section; omit it (or set it to null) to leave the world out. `size` picks a
preset: `paper` (the paper's scale; every field's default) or `demo` (small enough for the CPU
demo: each world's training corpus is a few thousand tokens, so it fits in the model's context
for the in-context condition). Any field set explicitly overrides the preset; the saved
config.yaml shows the resolved numbers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipeline.section import Section


class SizedWorld(Section):
    """A world section whose unset fields come from the preset named by `size`."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    size: Literal["demo", "paper"] = Field(
        "demo", description="Preset size: 'demo' (fast on CPU) or 'paper' (the paper's scale)."
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = cls.PRESETS.get(data.get("size", "demo"), {})
            data = {**data, **{k: v for k, v in preset.items() if k not in data}}
        return data


class ReversalsConfig(SizedWorld):
    PRESETS: ClassVar = {"demo": {"n_facts": 20, "articles_per_fact": 5}}
    n_facts: int = Field(100, gt=0, description="Comparison facts (two fresh nonsense nouns each). Demo: 20.")
    validation_facts: int = Field(
        0, ge=0, description="Further facts, trained like the others, whose items form the validation "
        "splits (val_reversal, val_rephrase) for choosing a training recipe; 0: none.")
    articles_per_fact: int = Field(10, gt=0, description="Training articles per fact, each with a random lead-in. Demo: 5.")


class SyllogismsConfig(SizedWorld):
    PRESETS: ClassVar = {"demo": {"n_examples": 30}}
    n_examples: int = Field(69, gt=0, description="Training examples (premise pairs over three fresh terms); one test item each. Demo: 30.")
    validation_examples: int = Field(
        0, ge=0, description="Further examples on fresh terms, trained like the others, whose items form the "
        "validation split (val_syllogism) for choosing a training recipe; 0: none.")


class SemanticConfig(SizedWorld):
    PRESETS: ClassVar = {"demo": {"n_categories": 18, "n_docs": 24, "max_sentences": 8,
                                  "n_holdout": 2, "items_per_split": 12}}
    n_categories: int | None = Field(
        None, gt=1, description="Categories kept from the built-in hierarchy (a connected part of it, "
        "roots included); default: all of it. Demo: 18.")
    n_docs: int = Field(2200, gt=0, description="Wiki-like training documents (QA documents included). Demo: 24.")
    min_sentences: int = Field(4, gt=0, description="Fewest sentences in a document.")
    max_sentences: int = Field(20, gt=0, description="Most sentences in a document. Demo: 8.")
    qa_fraction: float = Field(0.1, ge=0, le=1, description="Share of documents written as question-answer pairs.")
    n_holdout: int = Field(10, ge=0, description="Held-out leaf categories whose only trained fact is their parent. Demo: 2.")
    items_per_split: int | None = Field(
        None, gt=0, description="Most test items per split, sampled evenly over sub-tasks; default: every one. Demo: 12.")
    validation_items: int = Field(
        0, ge=0, description="Further items per split, made like its test items from the candidates (triples) "
        "the test items do not use (they take items_per_split of them); their items form the validation splits "
        "(val_rephrase, val_reversal, val_syllogism, val_category_holdout) for choosing a training recipe. "
        "Fewer where fewer are left, with a warning (none when items_per_split is unset: the tests take them all); "
        "0: none.")
    n_choices: int = Field(4, ge=2, description="Choices per item (fewer when too few hard distractors exist).")

    @model_validator(mode="after")
    def _check_sizes(self) -> "SemanticConfig":
        if self.min_sentences > self.max_sentences:
            raise ValueError(f"min_sentences: {self.min_sentences} is more than max_sentences {self.max_sentences}")
        return self


class FamiliesConfig(SizedWorld):
    PRESETS: ClassVar = {"demo": {"n_trees": 2, "docs_per_family": 2, "items_per_split": 16}}
    n_trees: int = Field(10, gt=0, description="Family trees of three generations. Demo: 2.")
    min_children: int = Field(2, ge=2, description="Fewest children of a couple (two or more, so siblings exist).")
    max_children: int = Field(3, ge=2, description="Most children of a couple.")
    docs_per_family: int = Field(3, gt=0, description="Training documents per couple; each states every link of that family once. Demo: 2.")
    items_per_split: int | None = Field(
        None, gt=0, description="Most test items per split, sampled evenly over sub-tasks; default: every one. Demo: 16.")
    validation_items: int = Field(
        0, ge=0, description="Further items per split, made like its test items from the derived triples that no "
        "test item asks in either direction; their items form the validation splits (val_reversal, "
        "val_composition) for choosing a training recipe. Fewer where fewer are left, with a warning (none when "
        "items_per_split is unset: the tests take them all); 0: none.")
    n_choices: int = Field(4, ge=2, description="Choices per item: the answer and other members of the same tree.")

    @model_validator(mode="after")
    def _check_sizes(self) -> "FamiliesConfig":
        if self.min_children > self.max_children:
            raise ValueError(f"min_children: {self.min_children} is more than max_children {self.max_children}")
        return self


class CelebritiesConfig(SizedWorld):
    PRESETS: ClassVar = {"demo": {"per_group": 5, "train_templates": 4, "test_templates": 2}}
    path: str = Field(..., description="Folder in the reversal-curse format (all.jsonl, p2d_reverse_prompts_test.jsonl, "
                      "p2d_prompts_test.jsonl, d2p_prompts_test.jsonl, both_prompts_test.jsonl, ...); "
                      "a relative path is relative to the working directory.")
    per_group: int | None = Field(None, ge=2, description="Celebrities kept per group (p2d, d2p, both; two or more, "
                                  "so every item has distractors); default: all 30. Demo: 5.")
    train_templates: int | None = Field(
        None, gt=0, description="Training lines kept per celebrity and direction; default: all 30. Demo: 4.")
    test_templates: int | None = Field(
        None, gt=0, description="Test prompts kept per celebrity and test; default: all 10. Demo: 2.")
    validation_templates: int = Field(
        0, ge=0, description="Further test prompts per kept celebrity and test file, drawn from those the test "
        "items do not use (each file has 10 per celebrity and direction, the test items take test_templates); "
        "their items form the validation splits (val_reversal, val_rephrase) for choosing a training recipe. "
        "Fewer where fewer are left (none when test_templates is unset: the tests take them all); 0: none.")
    n_choices: int = Field(4, ge=2, description="Choices per item: the true completion and random other celebrities'.")


class CorpusConfig(Section):
    path: str = Field(..., description="The user's documents: a .jsonl file (one JSON object per line with a text field), "
                      "a .parquet file (a text column), or a folder of .txt / .md files (one document each).")
    text_field: str = Field("text", description="Name of the text field (JSONL) or column (Parquet).")
    items: str | None = Field(
        None, description="Optional QA items: a .jsonl file of {question, choices, answer} (answer: index or choice "
        "text; optional id, split, subtask).")


class DataConfig(Section):
    reversals: ReversalsConfig | None = Field(None, description="Simple reversals world; omit to leave it out.")
    syllogisms: SyllogismsConfig | None = Field(None, description="Simple syllogisms world; omit to leave it out.")
    semantic: SemanticConfig | None = Field(None, description="Semantic-structure world; omit to leave it out.")
    families: FamiliesConfig | None = Field(None, description="Family-trees world; omit to leave it out.")
    celebrities: CelebritiesConfig | None = Field(None, description="Reversal-curse celebrities; omit to leave it out.")
    corpus: CorpusConfig | None = Field(None, description="The user's own documents and optional QA items; omit to leave it out.")

    def enabled(self) -> list[str]:
        """Names of the worlds this config builds, in a fixed order."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]
