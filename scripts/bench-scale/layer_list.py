"""Writes a layer list of N entries: an embedding, N - 2 identical
1024-wide blocks at sequence length 1024 (as `other` layers with FLOPs, priced by the analytic
model) and a vocabulary projection.

usage: python3 layer_list.py N > model.toml
"""
import sys

n = int(sys.argv[1])
h, s, vocab = 1024, 1024, 50000
out = ['name = "deep-%d"' % n]


def layer(name, kind, params, flops):
    out.append(
        '[[layers]]\nname = "%s"\nkind = "%s"\nparams = %d\noutput_elems_per_sample = %d\n'
        "forward_flops_per_sample = %e" % (name, kind, params, s * h, flops)
    )


layer("embedding", "embedding", vocab * h, 2.0 * s * h)
for i in range(n - 2):
    layer("block%d" % i, "other", 12 * h * h, 24.0 * h * h * s)
layer("head", "other", vocab * h, 2.0 * vocab * h * s)
print("\n".join(out))
