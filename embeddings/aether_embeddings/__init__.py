"""In-process sentence embeddings: ONNX BERT-family encoders on onnxruntime and tokenizers."""

from .pack import Manifest, ModelPack, PackError

__all__ = ["Manifest", "ModelPack", "PackError"]
