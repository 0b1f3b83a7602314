"""netstack.drivers.overlay: multi-host networks over VXLAN.

``options`` parses the driver's options, ``peers`` plans the forwarding
state of remote endpoints (pure), ``driver`` owns the kernel objects.  The
cluster store (netstack.cluster) allocates VNIs and addresses and feeds the
driver its peers; the driver never talks to etcd.
"""

from netstack.drivers.overlay.driver import NAME, OverlayDriver
from netstack.drivers.overlay.options import OPT_VNI, VXLAN_OVERHEAD, VXLAN_PORT
from netstack.drivers.overlay.peers import Peer

__all__ = ["NAME", "OPT_VNI", "OverlayDriver", "Peer", "VXLAN_OVERHEAD", "VXLAN_PORT"]
