import { describe, expect, it } from 'vitest';
import { cleanCode, displayPhone, parsePhone } from './phone';

describe('phone numbers', () => {
  it('accepts the Korean forms people type', () => {
    for (const input of [
      '010-1234-5678',
      '01012345678',
      ' 010 1234 5678 ',
      '010.1234.5678',
      '(010) 1234-5678',
      '+82 10 1234 5678',
      '+82 010 1234 5678',
      '+821012345678',
    ]) {
      expect(parsePhone(input), input).toBe('+821012345678');
    }
    expect(parsePhone('02-123-4567')).toBe('+8221234567');
  });

  it('accepts E.164 of other countries', () => {
    expect(parsePhone('+1 415 555 0100')).toBe('+14155550100');
    expect(parsePhone('+447911123456')).toBe('+447911123456');
  });

  it('refuses what the API refuses', () => {
    for (const input of [
      '',
      '1012345678', // no trunk 0, no +
      '00821012345678', // international call prefix
      '010-1234-567a',
      '+82 10 123', // too short for Korea
      '+8210123456789', // too long for Korea
      '+0123456789',
      '+1234567890123456', // longer than E.164
    ]) {
      expect(parsePhone(input), input).toBeNull();
    }
  });

  it('shows Korean numbers the domestic way', () => {
    expect(displayPhone('+821012345678')).toBe('010-1234-5678');
    expect(displayPhone('+82101234567')).toBe('010-123-4567');
    expect(displayPhone('+14155550100')).toBe('+14155550100');
  });

  it('keeps only the digits of a pasted code', () => {
    expect(cleanCode('123 456')).toBe('123456');
    expect(cleanCode('코드: 483920.')).toBe('483920');
    expect(cleanCode('12345678')).toBe('123456');
  });
});
