import { describe, expect, it } from 'vitest';
import { Pacer } from './pacing.js';

describe('Pacer (sliding 60 s window)', () => {
  it('allows `limit` starts per minute, then says how long to wait', () => {
    let now = 0;
    const pacer = new Pacer(() => now);
    for (let i = 0; i < 30; i++) {
      expect(pacer.available('microsoft', 30)).toBe(30 - i);
      pacer.take('microsoft');
      now += 100;
    }
    expect(pacer.available('microsoft', 30)).toBe(0);
    expect(pacer.waitMs('microsoft', 30)).toBe(60_000 - 3_000 + 1);
    now = 60_001;
    expect(pacer.available('microsoft', 30)).toBe(1);
    expect(pacer.available('google', 30)).toBe(30);
  });

  it('0 means unlimited; giving back frees a slot', () => {
    const pacer = new Pacer(() => 0);
    expect(pacer.available('x', 0)).toBe(Infinity);
    pacer.take('y');
    expect(pacer.available('y', 1)).toBe(0);
    pacer.giveBack('y');
    expect(pacer.available('y', 1)).toBe(1);
  });
});
