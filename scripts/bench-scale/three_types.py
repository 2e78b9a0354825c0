"""Writes a cluster file: A100-40GB, V100-16GB and GH200 nodes of 4 GPUs,
PER nodes of each type, every pair of nodes of different types joined by a
pair link (the layout amp-data's Sailor reader builds for mixed zones and
types). Bandwidths are round figures of the order of Sailor's curves.

usage: python3 three_types.py PER > cluster.toml
"""
import sys

per = int(sys.argv[1])
# gpu, intra Gbit/s, inter Gbit/s, NICs, GiB
types = [("A100-40GB", 300, 64, 4, 40), ("V100-16GB", 150, 32, 4, 16), ("GH200", 1200, 200, 4, 96)]
pair_gbps = {(0, 1): 24, (0, 2): 12, (1, 2): 8}
out = ['name = "a100-v100-gh200-%dx3"' % per]
for gpu, intra, inter, nics, mem in types:
    out.append(
        '[[nodes]]\ngpu = "%s"\ngpus = 4\nintra_gbps = %d\ninter_gbps = %d\nnics = %d\n'
        "gpu_memory_gib = %d\ncount = %d" % (gpu, intra, inter, nics, mem, per)
    )
for (a, b), gbps in pair_gbps.items():
    for i in range(per):
        for j in range(per):
            out.append("[[links]]\nnodes = [%d, %d]\ngbps = %d" % (a * per + i, b * per + j, gbps))
print("\n".join(out))
