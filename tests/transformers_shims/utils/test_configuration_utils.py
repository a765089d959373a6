"""Shim for transformers' `tests/utils/test_configuration_utils.py` (not in the sdist).

`ConfigTester.check_config_arguments_init` passes these common `PreTrainedConfig` arguments, each set to a non-default
value, and checks that the config keeps them.
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["MusiCoderModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
