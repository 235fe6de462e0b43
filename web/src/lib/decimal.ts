// Exact decimal strings, as the API sends prices and percentages ("95286000", "0.00012", "-1.5").
// Money is never turned into a binary float for display or comparison: everything here works on the
// digits (BigInt where arithmetic is needed), so "0.1" stays "0.1" and 95,286,000 never becomes
// 95,285,999.99.

const UNSIGNED = /^[0-9]+(\.[0-9]+)?$/;
const SIGNED = /^-?[0-9]+(\.[0-9]+)?$/;

/** A positive decimal as the API accepts it for a price or threshold ("95000000", "0.5"). */
export function isPositiveDecimal(text: string): boolean {
  return UNSIGNED.test(text) && /[1-9]/.test(text);
}

export function isDecimal(text: string): boolean {
  return SIGNED.test(text);
}

interface Parts {
  negative: boolean;
  integer: string;
  fraction: string;
}

function parts(text: string): Parts {
  const trimmed = text.trim();
  if (!SIGNED.test(trimmed)) {
    throw new Error(`not a decimal: ${JSON.stringify(text)}`);
  }
  const negative = trimmed.startsWith('-');
  const unsigned = negative ? trimmed.slice(1) : trimmed;
  const [integerRaw = '0', fractionRaw = ''] = unsigned.split('.');
  const integer = integerRaw.replace(/^0+(?=\d)/, '');
  const fraction = fractionRaw.replace(/0+$/, '');
  const zero = integer === '0' && fraction === '';
  return { negative: negative && !zero, integer, fraction };
}

/** The canonical form: no leading/trailing zeros, no "-0" ("095000000.00" → "95000000"). */
export function normalizeDecimal(text: string): string {
  const { negative, integer, fraction } = parts(text);
  return `${negative ? '-' : ''}${integer}${fraction ? `.${fraction}` : ''}`;
}

/** -1, 0 or 1 as `a` is below, equal to or above `b`. */
export function compareDecimals(a: string, b: string): -1 | 0 | 1 {
  const left = scaled(a);
  const right = scaled(b);
  const scale = Math.max(left.scale, right.scale);
  const leftValue = left.value * 10n ** BigInt(scale - left.scale);
  const rightValue = right.value * 10n ** BigInt(scale - right.scale);
  if (leftValue < rightValue) return -1;
  if (leftValue > rightValue) return 1;
  return 0;
}

interface Scaled {
  value: bigint;
  scale: number;
}

function scaled(text: string): Scaled {
  const { negative, integer, fraction } = parts(text);
  const value = BigInt(integer + fraction);
  return { value: negative ? -value : value, scale: fraction.length };
}

function unscaled({ value, scale }: Scaled): string {
  const negative = value < 0n;
  const digits = (negative ? -value : value).toString().padStart(scale + 1, '0');
  const integer = digits.slice(0, digits.length - scale);
  const fraction = digits.slice(digits.length - scale);
  return normalizeDecimal(`${negative ? '-' : ''}${integer}${fraction ? `.${fraction}` : ''}`);
}

/** Rounds half away from zero to `places` fraction digits, keeping them ("1.5" at 2 → "1.50"). */
export function roundDecimal(text: string, places: number): string {
  const { negative, integer, fraction } = parts(text);
  const padded = fraction.padEnd(places + 1, '0');
  let kept = BigInt(integer + padded.slice(0, places));
  if ((padded.charCodeAt(places) - 48) >= 5) {
    kept += 1n;
  }
  const digits = kept.toString().padStart(places + 1, '0');
  const whole = digits.slice(0, digits.length - places);
  const decimals = digits.slice(digits.length - places);
  const isZero = kept === 0n;
  return `${negative && !isZero ? '-' : ''}${whole}${places > 0 ? `.${decimals}` : ''}`;
}

/** Thousands separators on the integer part; the fraction as given ("95286000.5" → "95,286,000.5"). */
export function groupDecimal(text: string): string {
  const { negative, integer, fraction } = parts(text);
  const grouped = integer.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${negative ? '-' : ''}${grouped}${fraction ? `.${fraction}` : ''}`;
}

/**
 * A price for people: grouped, exact. Prices of 100 or more (KRW markets) show no more fraction
 * digits than the exchange sends; small prices keep every digit ("0.00012").
 */
export function formatPrice(text: string): string {
  return groupDecimal(text);
}

/** A signed percentage with two decimals ("1.234" → "+1.23%", "-0.5" → "-0.50%", "0" → "0.00%"). */
export function formatPercent(text: string): string {
  const rounded = roundDecimal(text, 2);
  const sign = compareDecimals(rounded, '0') > 0 ? '+' : '';
  return `${sign}${rounded}%`;
}

/** The sign of a decimal: which colour a change gets. */
export function signOf(text: string): -1 | 0 | 1 {
  return compareDecimals(text, '0');
}

/**
 * `price` moved by `basisPoints` hundredths of a percent (+10 = +0.1 %), rounded half up to the
 * price's own precision (at least whole units for prices of 1000 or more): the target presets of the
 * alert form.
 */
export function moveByBasisPoints(price: string, basisPoints: number): string {
  const { value, scale } = scaled(price);
  // More fraction digits only when the price's own precision cannot show the move (a price of 5
  // moved by 0.1 % is 5.01, not 5).
  for (let extra = 0; extra <= 8; extra += 1) {
    const widened = value * 10n ** BigInt(extra);
    const numerator = widened * BigInt(10_000 + basisPoints);
    // Half-up division by 10000 at the widened scale.
    const rounded = (numerator * 2n + 10_000n) / 20_000n;
    if (rounded !== widened || basisPoints === 0) {
      return unscaled({ value: rounded, scale: scale + extra });
    }
  }
  return normalizeDecimal(price);
}

/** Where the price is relative to the target, as the API records it at creation. */
export type PriceSide = 'below' | 'at' | 'above';

export function sideOf(price: string, target: string): PriceSide {
  const comparison = compareDecimals(price, target);
  return comparison < 0 ? 'below' : comparison > 0 ? 'above' : 'at';
}

export type Direction = 'up' | 'down' | 'either';

/**
 * Whether a target-price alert created now starts "already passed": the API then does not fire on the
 * current price, it waits for the price to return to the arming side and cross the target again.
 */
export function alreadyPassed(direction: Direction, side: PriceSide): boolean {
  switch (direction) {
    case 'up':
      return side !== 'below';
    case 'down':
      return side !== 'above';
    case 'either':
      return side === 'at';
  }
}

/** The difference `target - price` as a percentage of `price`, two decimals, exact digits. */
export function distancePercent(price: string, target: string): string {
  const left = scaled(price);
  const right = scaled(target);
  const scale = Math.max(left.scale, right.scale);
  const priceValue = left.value * 10n ** BigInt(scale - left.scale);
  const targetValue = right.value * 10n ** BigInt(scale - right.scale);
  if (priceValue === 0n) return '0';
  // Percent with 4 fraction digits, then rounded to 2 for display.
  const difference = (targetValue - priceValue) * 1_000_000n;
  const quotient = difference / priceValue;
  return roundDecimal(unscaled({ value: quotient, scale: 4 }), 2);
}
