"""Options of the overlay driver, parsed once into a typed config.

    com.docker.network.driver.overlay.vxlanid_list   the VNI (one value; Docker
                                                      allowed one per subnet)
    com.docker.network.driver.mtu                    MTU inside the overlay
                                                      (default: underlay MTU - 50)

The cluster store writes the VNI it allocated back into the first option,
as Docker's swarm manager does, so every host reads the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

from netstack.errors import InvalidParameter
from netstack.network import Network
from netstack.validation import check_known_options

OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"
OPT_MTU = "com.docker.network.driver.mtu"
OPTIONS = (OPT_VNI, OPT_MTU)

#: VXLAN header 8 + UDP 8 + IPv4 20 + inner Ethernet 14
VXLAN_OVERHEAD = 50
VXLAN_PORT = 4789
#: Docker's manager hands out VNIs from 4096 up; lower ones are left to users
FIRST_AUTO_VNI = 4096
MAX_VNI = (1 << 24) - 1


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    vni: int | None = None           # None until the cluster store allocated one
    mtu: int | None = None           # None: derived from the underlay
    # Fixed: the firewall treats an overlay's local bridge as a bridge
    # network's (sandboxes talk freely, egress masqueraded, ports on all
    # host addresses); Docker's overlay has no options for these either.
    icc: bool = True
    masquerade: bool = True
    host_binding_ipv4: str = ""


def parse_vni(text: str) -> int:
    first = text.split(",")[0].strip()
    try:
        vni = int(first)
    except ValueError:
        raise InvalidParameter(f"invalid value {text!r} for option {OPT_VNI}: expected a VXLAN id") from None
    if not 1 <= vni <= MAX_VNI:
        raise InvalidParameter(f"invalid VXLAN id {vni} for option {OPT_VNI}: must be between 1 and {MAX_VNI}")
    if "," in text:
        raise InvalidParameter(f"option {OPT_VNI}: pynet networks carry one VNI, got {text!r}")
    return vni


def parse_options(network: Network) -> OverlayConfig:
    from netstack.drivers.bridge import parse_mtu

    opts = network.options
    check_known_options(opts, OPTIONS, "overlay")
    return OverlayConfig(
        vni=parse_vni(opts[OPT_VNI]) if opts.get(OPT_VNI) else None,
        mtu=parse_mtu(OPT_MTU, opts[OPT_MTU]) if OPT_MTU in opts else None,
    )
