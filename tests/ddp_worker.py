"""Run by tests/test_distributed.py under torchrun: fit a small MLP on a fixed data set with the
gloo backend: argv = rows, output file, checkpoint path; rank 0 saves the trained guide's tensors
and the history to the output file."""
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])
from tests.test_distributed import train  # noqa: E402

if __name__ == "__main__":
    dist.init_process_group("gloo")
    guide, history = train(int(sys.argv[1]), checkpoint=sys.argv[3])
    if dist.get_rank() == 0:
        torch.save({"loc": guide.loc_flat.detach(), "rho": guide.rho_flat.detach(), "history": history.records},
                   sys.argv[2])
    dist.destroy_process_group()
