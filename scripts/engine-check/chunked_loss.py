"""torchtitan's chunked loss, on the CPU: what it holds and what it keeps.

    python chunked_loss.py

torchtitan 0.3.0's recipes compute the loss with `ChunkedLossWrapper`
(torchtitan/components/loss.py): the model's forward stops before the
vocabulary projection, and the wrapper runs the projection and PyTorch's
cross entropy over 8 slices of the sequence, each slice's backward at once,
gathering the gradient of the projection's input in an fp32 buffer; it
returns a loss whose backward hands that gradient, in 16 bits, to the
decoder. This builds torchtitan's own Llama 3 at a small size in bf16 (as
`sac.py`), sets the wrapper up as torchtitan's trainer does
(`set_lm_head`, `_skip_lm_head`), and measures with PyTorch's profiler,
over the wrapper's call alone:

- `kept`: what the call leaves allocated for the decoder's backward;
- `peak`: the most it holds at once above what was there before;

both less the projection's weight gradient, which amp counts with the
gradients, not the activations. Against amp's count per sample
(`memory/activations.rs`): kept, the 16-bit gradient of the projection's
input, `2 s h` bytes, a stored activation; peak, that (the slices' 16-bit
copies of the input stand where it will be), the fp32 gradient buffer,
`4 s h`, and one slice's loss, `s V / 8` logits of 14 bytes (the fp32
log-probabilities and PyTorch's two fp32 gradients beside the slice's
16-bit logits), the transient. No constant is fitted. Exit status 0 when
both are within 2%.
"""

import torch
from sac import BATCH, DIM, SEQ, build
from torch.profiler import ProfilerActivity, profile
from torchtitan.components.loss import ChunkedLossWrapper

VOCAB = 8192  # 32 x the width, as Llama 3's 128,256 is 31 x 4,096


def main():
    import sac

    sac.VOCAB = VOCAB
    model = build(2)
    loss_fn = ChunkedLossWrapper(ChunkedLossWrapper.Config())
    loss_fn.set_lm_head(model.lm_head)
    model._skip_lm_head = True
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    labels = torch.randint(0, VOCAB, (BATCH, SEQ))
    hidden = model(tokens, attention_masks=None)
    assert hidden.shape == (BATCH, SEQ, DIM), hidden.shape
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss, _ = loss_fn(hidden, labels)
    live = peak = 0
    for e in prof.profiler.kineto_results.events():
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    grad = model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    loss.backward()  # the decoder's backward takes the kept gradient
    kept, peak = live - grad, peak - grad
    tokens_ = BATCH * SEQ
    amp_kept = 2.0 * tokens_ * DIM
    # amp's stored bytes hold the kept gradient through the call (the
    # slices' 16-bit copies of the input stand where it will be).
    amp_peak = (
        amp_kept
        + 4.0 * tokens_ * DIM
        + tokens_ * VOCAB / ChunkedLossWrapper.Config().num_chunks * 14.0
    )
    print(
        f"torch {torch.__version__}; torchtitan's Llama 3, width {DIM}, vocabulary {VOCAB}, "
        f"micro-batch {BATCH} x {SEQ} tokens, bf16, {ChunkedLossWrapper.Config().num_chunks} slices"
    )
    ok = True
    for what, got, want in (("kept", kept, amp_kept), ("peak", peak, amp_peak)):
        ratio = want / got
        print(
            f"{what}: {got / tokens_:,.1f} bytes per token measured, amp {want / tokens_:,.1f} "
            f"({ratio:.3f} x)"
        )
        ok = ok and abs(ratio - 1.0) < 0.02
    print("amp counts what torchtitan's chunked loss holds" if ok else "MISMATCH")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
