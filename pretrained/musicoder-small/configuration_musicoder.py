"""MusiCoder model configuration (Zhao & Guo, MMM 2021, sections 3.1-3.3 and 4.1)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# The 324-dim acoustic frame of the paper (section 4.1), in channel order: block name -> [start, stop).
DEFAULT_FEATURE_LAYOUT = {
    "chroma": [0, 12],
    "mfcc": [12, 32],
    "mfcc_delta": [32, 52],
    "log_mel": [52, 180],
    "log_cqt": [180, 324],
}

# Paper Table 1. Large uses the standard FFN of 4 x hidden, which gives ~101M encoder parameters, not the paper's
# 93.1M: the paper does not state its FFN size and no usual choice reproduces 93.1M (see model_cards/).
# Clip pooling over valid frames: the mean, or statistics pooling (mean and standard deviation, concatenated).
POOLING_MODES = ("mean", "mean_std")

PRESETS = {
    # Not in the paper: the size of the shipped checkpoint (pretrained/musicoder-small), which pre-trains on 16 h of
    # music in under 2 hours on a 2-core CPU.
    "musicoder-small": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "musicoder-base": {"num_hidden_layers": 4, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    "musicoder-large": {"num_hidden_layers": 8, "hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 4096},
}

# Which model classes `save_pretrained` advertises for `trust_remote_code=True` loading.
AUTO_MAP = {
    "AutoConfig": "configuration_musicoder.MusiCoderConfig",
    "AutoModel": "modeling_musicoder.MusiCoderModel",
    "AutoModelForPreTraining": "modeling_musicoder.MusiCoderForPreTraining",
    "AutoModelForAudioClassification": "modeling_musicoder.MusiCoderForSequenceClassification",
}


@strict
class MusiCoderConfig(PreTrainedConfig):
    r"""
    Configuration of a MusiCoder encoder: a BERT-style bidirectional transformer over 324-dim acoustic frames, pre-trained
    by masked reconstruction with Contiguous Frames Masking (CFM) and Contiguous Channels Masking (CCM).

    The defaults are the paper's MusiCoder-Base (L=4, H=768, A=12). Use [`MusiCoderConfig.from_preset`] for the named
    presets `"musicoder-base"` and `"musicoder-large"` (and `"musicoder-small"`, the size of the shipped checkpoint).

    Args:
        feature_size (`int`, defaults to 324):
            Dimension of one input frame (the feature extractor's `feature_size`).
        feature_layout (`dict[str, list[int]]`, *optional*):
            Channel ranges `[start, stop)` of each feature block, in order; they must tile `[0, feature_size)`.
            Defaults to chroma (12), MFCC (20), MFCC delta (20), log-mel (128), log-CQT (144).
        hidden_size (`int`, defaults to 768): Width of the encoder.
        num_hidden_layers (`int`, defaults to 4): Number of transformer encoder layers.
        num_attention_heads (`int`, defaults to 12): Attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 3072): Width of the feed-forward block (4 x hidden in the presets).
        hidden_act (`str`, defaults to `"gelu"`): Feed-forward activation.
        hidden_dropout_prob (`float`, defaults to 0.1): Dropout after embeddings, attention output and feed-forward.
        attention_probs_dropout_prob (`float`, defaults to 0.1): Dropout on attention probabilities.
        max_position_embeddings (`int`, defaults to 1600):
            The window: the longest run of frames the encoder attends over at once (1600 frames is about 37 s at
            44.1 kHz / hop 1024), and the size of the position table. `forward` takes inputs of any length and reads
            longer ones in windows of at most this many frames (`window_spans`); nothing is truncated.
        initializer_range (`float`, defaults to 0.02): Std of the truncated-normal weight initialiser.
        layer_norm_eps (`float`, defaults to 1e-12): LayerNorm epsilon.
        cfm_mask_ratio (`float`, defaults to 0.15): Share of valid frames selected by CFM.
        cfm_span_p (`float`, defaults to 0.2): Parameter of the geometric span-length distribution.
        cfm_min_span (`int`, defaults to 2) / cfm_max_span (`int`, defaults to 7):
            Span lengths are Geometric(p) restricted to `[cfm_min_span, cfm_max_span]` and renormalised (mean 3.87).
        cfm_zero_prob (`float`, defaults to 0.7) / cfm_random_prob (`float`, defaults to 0.2):
            Per span: set to zero, or replaced by random frames of the same clip; the rest (10%) is left unchanged but
            still reconstructed.
        ccm_feature_blocks (`list[str]`, defaults to `["log_mel", "log_cqt"]`):
            Blocks of `feature_layout` in which CCM zeroes one contiguous band of channels per clip (one band per block).
        ccm_max_width (`int`, *optional*):
            Largest band width W (width ~ Uniform{0..W}); `None` means the whole block, as in the paper.
        huber_delta (`float`, defaults to 1.0): Threshold of the Huber reconstruction loss (paper eq. 3 uses 1).
        use_weighted_layer_sum (`bool`, defaults to `False`):
            Classify from a learned softmax-weighted sum of all hidden states (embeddings included) instead of the last.
        classifier_dropout (`float`, *optional*):
            Dropout before the classification layer; `None` uses `hidden_dropout_prob`.
        classifier_pooling (`str`, defaults to `"mean"`):
            How the classifier pools the frames of a clip, over valid frames only: `"mean"`, or `"mean_std"`
            (statistics pooling: the mean and the standard deviation over time, concatenated, `2 * hidden_size`).
    """

    model_type = "musicoder"

    feature_size: int = 324
    feature_layout: dict[str, list[int]] | None = None
    hidden_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 1600
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    cfm_mask_ratio: float = 0.15
    cfm_span_p: float = 0.2
    cfm_min_span: int = 2
    cfm_max_span: int = 7
    cfm_zero_prob: float = 0.7
    cfm_random_prob: float = 0.2
    ccm_feature_blocks: list[str] | None = None
    ccm_max_width: int | None = None
    huber_delta: float = 1.0
    use_weighted_layer_sum: bool = False
    classifier_dropout: float | int | None = None
    classifier_pooling: str = "mean"

    def __post_init__(self, **kwargs):
        if self.feature_layout is None:
            self.feature_layout = {name: list(span) for name, span in DEFAULT_FEATURE_LAYOUT.items()}
        else:  # JSON saves sort the keys and turn tuples into lists: restore channel order
            spans = sorted(self.feature_layout.items(), key=lambda item: item[1][0])
            self.feature_layout = {name: [int(span[0]), int(span[1])] for name, span in spans}
        if self.ccm_feature_blocks is None:
            self.ccm_feature_blocks = ["log_mel", "log_cqt"]
        super().__post_init__(**kwargs)
        # Without this, `save_pretrained` would only advertise the class that was saved.
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(AUTO_MAP)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "MusiCoderConfig":
        """A named preset: the paper's Table 1 (`"musicoder-base"`, `"musicoder-large"`) or `"musicoder-small"` (the
        shipped checkpoint's size); kwargs override fields."""
        if name not in PRESETS:
            raise ValueError(f"Unknown MusiCoder preset {name!r}; available presets: {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **kwargs})

    def feature_slice(self, block: str) -> slice:
        """The channels of one feature block, e.g. `config.feature_slice("log_mel")`."""
        if block not in self.feature_layout:
            raise KeyError(f"No feature block {block!r}; the layout has {list(self.feature_layout)}.")
        start, stop = self.feature_layout[block]
        return slice(start, stop)

    def validate_architecture(self):
        super().validate_architecture()
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})."
            )
        for name in ("feature_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")

    def validate_feature_layout(self):
        expected_start = 0
        for name, (start, stop) in self.feature_layout.items():
            if start != expected_start or stop <= start:
                raise ValueError(
                    f"feature_layout must tile [0, feature_size) with contiguous, non-empty blocks in order; block "
                    f"{name!r} is [{start}, {stop}) but should start at {expected_start}."
                )
            expected_start = stop
        if expected_start != self.feature_size:
            raise ValueError(f"feature_layout covers {expected_start} channels but feature_size is {self.feature_size}.")
        unknown = [block for block in self.ccm_feature_blocks if block not in self.feature_layout]
        if unknown:
            raise ValueError(f"ccm_feature_blocks {unknown} are not blocks of feature_layout {list(self.feature_layout)}.")
        if self.ccm_max_width is not None and self.ccm_max_width < 0:
            raise ValueError(f"ccm_max_width must be >= 0 or None, got {self.ccm_max_width}.")

    def validate_pooling(self):
        if self.classifier_pooling not in POOLING_MODES:
            raise ValueError(f"classifier_pooling must be one of {POOLING_MODES}, got {self.classifier_pooling!r}.")

    def validate_masking(self):
        if not 0.0 <= self.cfm_mask_ratio < 1.0:
            raise ValueError(f"cfm_mask_ratio must be in [0, 1), got {self.cfm_mask_ratio}.")
        if not 0.0 < self.cfm_span_p <= 1.0:
            raise ValueError(f"cfm_span_p must be in (0, 1], got {self.cfm_span_p}.")
        if not 1 <= self.cfm_min_span <= self.cfm_max_span:
            raise ValueError(
                f"Need 1 <= cfm_min_span <= cfm_max_span, got cfm_min_span={self.cfm_min_span}, "
                f"cfm_max_span={self.cfm_max_span}."
            )
        if self.cfm_zero_prob < 0 or self.cfm_random_prob < 0 or self.cfm_zero_prob + self.cfm_random_prob > 1:
            raise ValueError(
                f"cfm_zero_prob ({self.cfm_zero_prob}) and cfm_random_prob ({self.cfm_random_prob}) must be "
                "non-negative and sum to at most 1 (the rest of the spans is left unchanged)."
            )
        if self.huber_delta <= 0:
            raise ValueError(f"huber_delta must be positive, got {self.huber_delta}.")


__all__ = ["MusiCoderConfig", "POOLING_MODES", "PRESETS", "DEFAULT_FEATURE_LAYOUT"]
