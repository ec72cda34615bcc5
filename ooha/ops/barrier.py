"""``layer_converged``: a barrier operation that orders layers across hosts and changes nothing."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation


@operation(is_idempotent=True)
def layer_converged(layer: str):
    """A barrier: the same operation on every host after ``layer``; yields no command.

    + layer: the layer's name (only in the noop message)

    pyinfra runs each operation on all hosts before the next one, in an order merged from
    every host's own call order; hosts outside a layer's groups add no edge between that
    layer's operations and the next layer's, so without a shared operation they interleave.
    Called on EVERY host (also those the layer does not apply to) right after the layer,
    it makes every host finish layer N before any host starts layer N+1 (deploys/ha.py).

    **Example:**

    .. code:: python

        for layer in host.loop(layers):
            if layer.applies(host):
                layer.deploy()()
            layer_converged(name=f"Layer {layer.name} converged on every host", layer=layer.name)
    """
    host.noop(f"layer {layer} done here")
    yield from ()
