import { describe, expect, it } from 'vitest';
import { axisNsFormat, formatBandwidth, formatBytes, formatCount, formatNs, shortGpuName, formatNsClock } from '../../src/shared/format';

describe('formatNs', () => {
  it('keeps four significant digits from microseconds to minutes', () => {
    expect(formatNs(512)).toBe('512 ns');
    expect(formatNs(1_234)).toBe('1.2 µs');
    expect(formatNs(50_090_000)).toBe('50.09 ms');
    expect(formatNs(118_600_000)).toBe('118.6 ms');
    expect(formatNs(3_573_024_006)).toBe('3.573 s');
    // The runs table showed "36.054 s" beside "125.0 s": tens of seconds now round like the rest.
    expect(formatNs(36_053_842_649)).toBe('36.05 s');
    expect(formatNs(124_970_000_000)).toBe('125.0 s');
    expect(formatNs(-2_500_000_000)).toBe('-2.500 s');
  });
  it('says "–" for what was not measured', () => {
    for (const v of [null, undefined, Number.NaN, Number.POSITIVE_INFINITY]) expect(formatNs(v)).toBe('–');
  });
});

describe('formatBytes and formatBandwidth', () => {
  it('use decimal units, as GPU vendors quote them', () => {
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(4_194_304)).toBe('4.19 MB');
    expect(formatBytes(87_073_751_040)).toBe('87.1 GB');
    expect(formatBytes(226_210_000_000)).toBe('226 GB');
    expect(formatBandwidth(53.305e9)).toBe('53.3 GB/s');
    expect(formatBytes(null)).toBe('–');
    expect(formatBandwidth(undefined)).toBe('–');
  });
});

describe('formatCount', () => {
  it('groups thousands', () => {
    expect(formatCount(21842)).toBe('21,842');
    expect(formatCount(7)).toBe('7');
  });
});

describe('axisNsFormat', () => {
  it('puts one unit and one precision on every tick of an axis', () => {
    const f = axisNsFormat(12e9, 2e9);
    expect([0, 2e9, 12e9].map(f)).toEqual(['0 s', '2 s', '12 s']);
    const g = axisNsFormat(250e6, 50e6);
    expect([0, 50e6, 250e6].map(g)).toEqual(['0 ms', '50 ms', '250 ms']);
    const h = axisNsFormat(1.2e9, 0.2e9);
    expect([0, 0.2e9, 1.2e9].map(h)).toEqual(['0.0 s', '0.2 s', '1.2 s']);
    const k = axisNsFormat(3e9, 0.25e9);
    expect(k(0.25e9)).toBe('0.25 s');
  });
  it('zoomed far into a long run: seconds with as many decimals as the step needs', () => {
    const f = axisNsFormat(100.5e9, 50e6);
    expect(f(100.05e9)).toBe('100.05 s');
    const g = axisNsFormat(100e9, 1);
    expect(g(100e9 + 1)).toBe('100.000000001 s');
    expect(g(100e9 + 2)).not.toBe(g(100e9 + 1));
  });
  it('survives a flat axis', () => {
    expect(axisNsFormat(0, 0)(0)).toBe('0 ns');
  });
});

describe('formatNsClock', () => {
  it("writes elapsed in the total's unit and precision (the total as formatNs writes it)", () => {
    expect(formatNsClock(0, 58.15e9)).toBe('0.00 s / 58.15 s');
    expect(formatNsClock(999.6e6, 58.15e9)).toBe('1.00 s / 58.15 s');
    expect(formatNsClock(12.345e9, 321.8e9)).toBe('12.3 s / 321.8 s');
    expect(formatNsClock(1.5e9, 3.573e9)).toBe('1.500 s / 3.573 s');
    expect(formatNsClock(0, 50.09e6)).toBe('0.00 ms / 50.09 ms');
    for (const total of [58.15e9, 321.8e9, 3.573e9, 50.09e6, 125e9]) expect(formatNsClock(total, total).split(' / ')[1]).toBe(formatNs(total));
  });

  it('an empty run still reads', () => {
    expect(formatNsClock(0, 0)).toBe('0 ns / 0 ns');
  });
});

describe('shortGpuName', () => {
  it('drops the vendor prefix every card in the column shares', () => {
    expect(shortGpuName('NVIDIA H100 80GB HBM3')).toBe('H100 80GB HBM3');
    expect(shortGpuName('NVIDIA GH200 480GB')).toBe('GH200 480GB');
    expect(shortGpuName('Tesla T4')).toBe('Tesla T4');
  });
});
