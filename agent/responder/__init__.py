"""`xcheck responder`: the far end, a separate deployable (a VM in the virtual network) that answers xcheck's probes."""
