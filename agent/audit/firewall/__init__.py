"""The site's firewall: nftables (`nft -j list ruleset`) and iptables (`iptables-save`) rulesets
read into one model, packets walked through it as netfilter would, and the findings for an Azure
VPN's packets (UDP 500, UDP 4500, ESP, TCP 443) and the TCP MSS clamp."""

from agent.audit.firewall.walk import evaluate
from agent.audit.firewall.host import read_host_firewall
from agent.audit.firewall.iptables import read_iptables_save
from agent.audit.firewall.judge import judge_firewall
from agent.audit.firewall.model import CtState, Decision, Outcome, Packet, Path, Protocol, RuleRef
from agent.audit.firewall.nft import read_nft_json
from agent.audit.firewall.ruleset import Ruleset

__all__ = ["CtState", "Decision", "Outcome", "Packet", "Path", "Protocol", "RuleRef", "Ruleset", "evaluate",
           "judge_firewall", "read_host_firewall", "read_iptables_save", "read_nft_json"]
