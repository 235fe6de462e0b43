// Phone numbers as people type them: E.164 (+821012345678) or the Korean domestic forms
// (010-1234-5678, 01012345678, +82 010 ...). The same rules as the API's `PhoneNumber::parse`, so the
// form can say "not a phone number" before a request, and show the number it will text.

const SEPARATORS = /[\s\-.()]/g;

/** The E.164 form of `input`, or `null` when the API would refuse it. */
export function parsePhone(input: string): string | null {
  const trimmed = input.trim();
  const international = trimmed.startsWith('+');
  const rest = (international ? trimmed.slice(1) : trimmed).replace(SEPARATORS, '');
  if (!/^[0-9]*$/.test(rest)) {
    return null;
  }
  let digits: string;
  if (international) {
    // "+82 010 ...": the domestic trunk 0 kept after the country code.
    digits = rest.startsWith('820') ? `82${rest.slice(3)}` : rest;
  } else {
    // Without '+' only the Korean domestic form (trunk prefix 0) is unambiguous; "00" would be an
    // international call prefix, which varies by carrier.
    if (!rest.startsWith('0') || rest.startsWith('00')) {
      return null;
    }
    digits = `82${rest.slice(1)}`;
  }
  if (digits.length < 7 || digits.length > 15 || digits.startsWith('0')) {
    return null;
  }
  if (digits.startsWith('82')) {
    const national = digits.slice(2);
    if (national.length < 8 || national.length > 10) {
      return null;
    }
  }
  return `+${digits}`;
}

/** How a Korean number is written at home (+821012345678 → 010-1234-5678); others stay E.164. */
export function displayPhone(e164: string): string {
  const korean = /^\+82(1\d)(\d{3,4})(\d{4})$/.exec(e164);
  if (korean) {
    return `0${korean[1]}-${korean[2]}-${korean[3]}`;
  }
  return e164;
}

/** Only the digits a sign-in code may hold, at most `length` of them (pasting "123 456" works). */
export function cleanCode(input: string, length = 6): string {
  return input.replace(/\D/g, '').slice(0, length);
}
