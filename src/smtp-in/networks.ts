/**
 * Allowed Networks: devices on these networks may send without AUTH (RFC 6409 §4.3 "within a protected
 * subnetwork"). Everything else must authenticate; the relay is never open.
 */
import ipaddr from 'ipaddr.js';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

export interface ParsedNetworks {
  ranges: Range[];
  /** Normalised text of each entry, for display and storage. */
  entries: string[];
  /** Entries that could not be read, with why. */
  errors: string[];
}

/** Parses one CIDR or address per line (commas and spaces also separate; `#` starts a comment). A bare address is a /32 or /128. */
export function parseNetworks(text: string): ParsedNetworks {
  const ranges: Range[] = [];
  const entries: string[] = [];
  const errors: string[] = [];
  const words = text.split('\n').flatMap((line) => line.replace(/#.*$/, '').split(/[\s,;]+/));
  for (const raw of words) {
    const entry = raw.trim();
    if (entry === '') continue;
    try {
      let range: Range;
      if (entry.includes('/')) {
        range = ipaddr.parseCIDR(entry);
        const [address, bits] = range;
        // 10.1.2.3/8 is almost certainly a typo for 10.0.0.0/8: say so rather than guess.
        const network = address.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(entry) : ipaddr.IPv6.networkAddressFromCIDR(entry);
        if (network.toString() !== address.toString()) {
          errors.push(`${entry}: the network address of a /${bits} is ${network.toString()} (write ${network.toString()}/${bits})`);
          continue;
        }
      } else {
        const address = ipaddr.parse(entry);
        range = [address, address.kind() === 'ipv4' ? 32 : 128];
      }
      const [address, bits] = range;
      if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress()) {
        range = [(address as ipaddr.IPv6).toIPv4Address(), Math.max(0, bits - 96)];
      }
      ranges.push(range);
      entries.push(`${range[0].toString()}/${range[1]}`);
    } catch {
      errors.push(`${entry}: not an IP address or CIDR range (for example 192.168.1.0/24)`);
    }
  }
  return { ranges, entries, errors };
}

/** True when `address` (as the socket reports it, IPv4-mapped or not) is in one of the ranges. */
export function isAllowed(address: string, ranges: Range[]): boolean {
  if (ranges.length === 0) return false;
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.process(address.replace(/^\[|\]$/g, '').replace(/%.*$/, ''));
  } catch {
    return false;
  }
  return ranges.some(([network, bits]) => parsed.kind() === network.kind() && parsed.match(network, bits));
}
