"""ElasticBERT: configuration, models, gradient equilibrium, batched early exit, BERT conversion.

Importing this package registers `elasticbert` with transformers' Auto classes (AutoConfig, AutoModel,
AutoModelForSequenceClassification, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer), so
`AutoModelForSequenceClassification.from_pretrained(dir)` works on a saved ElasticBERT directory. AutoTokenizer
(and so `pipeline(...)`) gets BERT's WordPiece tokenizer for a folder that names no tokenizer class, as the
released `fnlp/elasticbert-*` checkpoints (a vocab.txt alone). Heavy submodules (early_exit, convert) are
imported on use.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizer,
)

from .configuration_elasticbert import ElasticBertConfig
from .gradient_equilibrium import GradientEquilibrium, gradient_rescale
from .modeling_elasticbert import (
    ElasticBertExit,
    ElasticBertForSequenceClassification,
    ElasticBertModel,
    ElasticBertModelOutput,
    ElasticBertPreTrainedModel,
    ElasticBertSequenceClassifierOutput,
)


class _BertTokenizerOfAVocabulary(BertTokenizer):
    """What AutoTokenizer loads for a folder of `model_type: elasticbert` that names no tokenizer class: BERT's
    tokenizer, refused (OSError) when the folder has no vocabulary. transformers 5 builds BERT's tokenizer of
    its special tokens alone there (it does so for `model_type: bert` too), so every word would become [UNK]
    without a word said (a saved model folder without its tokenizer, loaded by a pipeline or `elue pretrain`);
    before BERT's tokenizer was registered here, such a folder failed to load. Loads a plain `BertTokenizer`
    (saved as such)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):  # noqa: ANN001, ANN206
        tokenizer = BertTokenizer.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
            raise OSError(
                f"{pretrained_model_name_or_path} has no tokenizer files (vocab.txt, tokenizer.json): BERT's "
                "tokenizer would know only its special tokens; copy the checkpoint's tokenizer files there"
            )
        return tokenizer


def _register() -> None:
    from .pretraining.modeling_pretraining import ElasticBertForMaskedLM, ElasticBertForPreTraining

    for register in (
        lambda: AutoModelForMaskedLM.register(ElasticBertConfig, ElasticBertForMaskedLM),
        lambda: AutoModelForPreTraining.register(ElasticBertConfig, ElasticBertForPreTraining),
        lambda: AutoConfig.register("elasticbert", ElasticBertConfig),
        lambda: AutoModel.register(ElasticBertConfig, ElasticBertModel),
        lambda: AutoModelForSequenceClassification.register(
            ElasticBertConfig, ElasticBertForSequenceClassification
        ),
        # ElasticBERT's tokenizer is BERT's (the released checkpoints' model card loads BertTokenizer by hand)
        lambda: AutoTokenizer.register(ElasticBertConfig, tokenizer_class=_BertTokenizerOfAVocabulary),
    ):
        try:
            register()
        except ValueError:  # already registered (re-import, or another copy of this module)
            pass


_register()

__all__ = [
    "ElasticBertConfig",
    "ElasticBertExit",
    "ElasticBertForSequenceClassification",
    "ElasticBertModel",
    "ElasticBertModelOutput",
    "ElasticBertPreTrainedModel",
    "ElasticBertSequenceClassifierOutput",
    "GradientEquilibrium",
    "gradient_rescale",
]
