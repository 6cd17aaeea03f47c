"""In the trainer image: ZeRO-Offload's CPU Adam loads without compiling anything, and steps."""

import torch
from deepspeed.git_version_info import installed_ops
from deepspeed.ops.adam import DeepSpeedCPUAdam

assert installed_ops.get("cpu_adam"), f"CPU Adam is not prebuilt: {installed_ops}"
p = torch.nn.Parameter(torch.ones(4))
opt = DeepSpeedCPUAdam([p], lr=0.1)
p.grad = torch.ones(4)
opt.step()
assert torch.all(p < 1), p
print("ok cpu_adam", p.tolist())
