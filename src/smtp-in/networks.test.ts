import { describe, expect, it } from 'vitest';
import { isAllowed, parseNetworks } from './networks.js';

describe('Allowed Networks', () => {
  it('parses CIDR ranges and single addresses', () => {
    const parsed = parseNetworks('192.168.10.0/24\n10.0.0.5, fd00::/8\n# comment');
    expect(parsed.errors).toEqual([]);
    expect(parsed.entries).toEqual(['192.168.10.0/24', '10.0.0.5/32', 'fd00::/8']);
  });

  it('matches IPv4, IPv4-mapped IPv6 and IPv6 clients', () => {
    const { ranges } = parseNetworks('192.168.10.0/24\nfd00::/8');
    expect(isAllowed('192.168.10.77', ranges)).toBe(true);
    expect(isAllowed('::ffff:192.168.10.77', ranges)).toBe(true);
    expect(isAllowed('192.168.11.1', ranges)).toBe(false);
    expect(isAllowed('fd12::1', ranges)).toBe(true);
    expect(isAllowed('2001:db8::1', ranges)).toBe(false);
    expect(isAllowed('not an address', ranges)).toBe(false);
  });

  it('allows nobody when the list is empty (never an open relay)', () => {
    expect(isAllowed('127.0.0.1', parseNetworks('').ranges)).toBe(false);
  });

  it('explains typos instead of guessing', () => {
    const parsed = parseNetworks('10.1.2.3/8\n192.168.1.300\nexample.com');
    expect(parsed.entries).toEqual([]);
    expect(parsed.errors[0]).toMatch(/network address of a \/8 is 10\.0\.0\.0/);
    expect(parsed.errors[1]).toMatch(/192\.168\.1\.300: not an IP address/);
    expect(parsed.errors[2]).toMatch(/example\.com: not an IP address/);
  });
});
