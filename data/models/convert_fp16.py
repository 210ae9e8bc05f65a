"""Convert a Hugging Face BERT checkpoint to the fp16 safetensors that data/models/ ships.

    python3 data/models/convert_fp16.py SOURCE/model.safetensors data/models/NAME/model.safetensors

Floating-point tensors become float16 (the host reads them back as float32); `embeddings.position_ids`, a buffer
that transformers rebuilds itself, is left out. Every other name and shape is kept as it is.
"""
import sys

import torch
from safetensors.torch import load_file, save_file


def main(source, target):
    tensors = load_file(source)
    converted = {}
    for name, tensor in tensors.items():
        if name.endswith("position_ids"):
            continue
        converted[name] = tensor.to(torch.float16).contiguous() if tensor.is_floating_point() else tensor
    save_file(converted, target, metadata={"format": "pt"})
    print(f"{len(converted)} tensors written to {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
