"""The tiny model shapes the pre-training tests train (hidden 32; 4 layers, or 2 where a test runs often)."""

TINY_MODEL = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}

TWO_LAYERS = dict(TINY_MODEL, num_hidden_layers=2)
