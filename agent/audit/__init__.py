"""`xcheck audit`: the site's own side of an Azure connection, read from its real configuration.

findings.py is the result (findings and a parse status per input file); sources.py reads input files
bounded, with includes; ipsec/ reads strongSwan and Libreswan configurations into one model of
connections and judges them against the rule set's Azure parameters (parameters.py); firewall/
reads nftables and iptables rulesets into one model and evaluates packets through it;
routing.py judges forwarding, BGP and address overlaps; run.py puts them together.
"""
