import { describe, expect, it } from 'vitest';
import {
  alreadyPassed,
  compareDecimals,
  distancePercent,
  formatPercent,
  formatPrice,
  isPositiveDecimal,
  moveByBasisPoints,
  normalizeDecimal,
  roundDecimal,
  sideOf,
} from './decimal';

describe('decimal strings', () => {
  it('groups prices exactly, never through a float', () => {
    expect(formatPrice('95286000')).toBe('95,286,000');
    expect(formatPrice('1234567.891')).toBe('1,234,567.891');
    expect(formatPrice('0.00012')).toBe('0.00012');
    expect(formatPrice('999')).toBe('999');
    expect(formatPrice('-1500000')).toBe('-1,500,000');
    // 2^53 + 1: a float would print ...992.
    expect(formatPrice('9007199254740993')).toBe('9,007,199,254,740,993');
    expect(formatPrice('0.1')).toBe('0.1');
  });

  it('normalizes and compares across scales and signs', () => {
    expect(normalizeDecimal('095000000.00')).toBe('95000000');
    expect(normalizeDecimal('-0.0')).toBe('0');
    expect(compareDecimals('95000000', '95000000.0')).toBe(0);
    expect(compareDecimals('0.1', '0.09')).toBe(1);
    expect(compareDecimals('-2', '-10')).toBe(1);
    expect(compareDecimals('9007199254740993', '9007199254740992')).toBe(1);
  });

  it('rounds half away from zero and formats signed percentages', () => {
    expect(roundDecimal('1.005', 2)).toBe('1.01');
    expect(roundDecimal('-1.005', 2)).toBe('-1.01');
    expect(roundDecimal('0.004', 2)).toBe('0.00');
    expect(roundDecimal('-0.004', 2)).toBe('0.00');
    expect(roundDecimal('9.999', 2)).toBe('10.00');
    expect(formatPercent('1.234')).toBe('+1.23%');
    expect(formatPercent('-0.5')).toBe('-0.50%');
    expect(formatPercent('0')).toBe('0.00%');
  });

  it('accepts only what the API takes as a price', () => {
    expect(isPositiveDecimal('95000000')).toBe(true);
    expect(isPositiveDecimal('0.5')).toBe(true);
    for (const bad of ['0', '0.0', '-1', '1e6', '1,000', '.5', '5.', '', ' 5']) {
      expect(isPositiveDecimal(bad)).toBe(false);
    }
  });

  it('moves a price by basis points at its own precision', () => {
    expect(moveByBasisPoints('95286000', 10)).toBe('95381286');
    expect(moveByBasisPoints('95286000', -10)).toBe('95190714');
    expect(moveByBasisPoints('5', 10)).toBe('5.01');
    expect(moveByBasisPoints('0.00012', 100)).toBe('0.000121');
    expect(moveByBasisPoints('100', 0)).toBe('100');
  });

  it('knows the side of a price and when a target is already passed', () => {
    expect(sideOf('100', '101')).toBe('below');
    expect(sideOf('101', '101.0')).toBe('at');
    expect(sideOf('102', '101')).toBe('above');
    expect(alreadyPassed('up', 'below')).toBe(false);
    expect(alreadyPassed('up', 'at')).toBe(true);
    expect(alreadyPassed('up', 'above')).toBe(true);
    expect(alreadyPassed('down', 'above')).toBe(false);
    expect(alreadyPassed('down', 'below')).toBe(true);
    expect(alreadyPassed('either', 'below')).toBe(false);
    expect(alreadyPassed('either', 'at')).toBe(true);
    expect(distancePercent('95000000', '96000000')).toBe('1.05');
    expect(distancePercent('100', '99.5')).toBe('-0.50');
  });
});
