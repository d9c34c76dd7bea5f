from .flashi2v import FlashI2VTransformer, FourierEmbedding, LearnableProjection, build_transformer
from .wan import WanTransformer

__all__ = ["FlashI2VTransformer", "FourierEmbedding", "LearnableProjection", "WanTransformer", "build_transformer"]
