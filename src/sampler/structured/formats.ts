// JSON-schema `format` values as regular expressions (the subset regex.ts reads). Each is a
// subset of what the format's RFC (and ajv-formats' "full" mode) accepts, so every output
// validates: dates know the days of each month and leap years; hostnames keep under 253
// characters by keeping labels under 40 characters and at most six of them; IPv6 is the plain
// hexadecimal forms (with or without ::); URIs are scheme ":" and RFC 3986 characters.

const YEAR = '\\d{4}';
const LEAP_YEAR = '(?:\\d\\d(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)';
const MONTH_DAY =
  '(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\\d|30)|02-(?:0[1-9]|1\\d|2[0-8]))';
const DATE = `(?:${YEAR}-${MONTH_DAY}|${LEAP_YEAR}-02-29)`;
const TIME_OF_DAY = '(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d+)?';
const OFFSET = '(?:[Zz]|[+-](?:[01]\\d|2[0-3]):[0-5]\\d)';
const DUR_TIME = '(?:T(?:\\d+H(?:\\d+M)?(?:\\d+S)?|\\d+M(?:\\d+S)?|\\d+S))';
const DUR_DATE = '(?:\\d+Y(?:\\d+M)?(?:\\d+D)?|\\d+M(?:\\d+D)?|\\d+D)';
const EMAIL_LOCAL = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*";
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}[A-Za-z0-9])?';
const HOSTNAME = `${LABEL}(?:\\.${LABEL}){0,5}`;
const DOMAIN = `${LABEL}(?:\\.${LABEL}){1,5}`;
const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4 = `${OCTET}(?:\\.${OCTET}){3}`;
const H16 = '[0-9A-Fa-f]{1,4}';
function ipv6(): string {
  const forms = [`(?:${H16}:){7}${H16}`];
  // Compressed: i groups before ::, j after, i + j <= 7 (:: stands for at least one group).
  for (let i = 0; i <= 7; i++)
    for (let j = 0; i + j <= 7; j++) {
      const left = i === 0 ? '' : `(?:${H16}:){${i - 1}}${H16}`;
      const right = j === 0 ? '' : `(?:${H16}:){${j - 1}}${H16}`;
      forms.push(`${left}::${right}`);
    }
  return `(?:${forms.join('|')})`;
}
const UUID = '[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}';
const PCHAR = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
const QUERY = `(?:\\?(?:${PCHAR}|[/?])*)?(?:#(?:${PCHAR}|[/?])*)?`;
const URI = `(?:[A-Za-z][A-Za-z0-9+.-]*:(?://(?:${HOSTNAME}(?::\\d{1,5})?)?(?:/${PCHAR}*)*|${PCHAR}+(?:/${PCHAR}*)*)${QUERY})`;
const RELATIVE_REF = `(?:(?:/?${PCHAR.replace(':@', '@')}+)(?:/${PCHAR}*)*${QUERY})`;

export const FORMATS: Record<string, string> = {
  date: DATE,
  time: `${TIME_OF_DAY}${OFFSET}?`,
  'date-time': `${DATE}T${TIME_OF_DAY}${OFFSET}`,
  duration: `P(?:${DUR_DATE}${DUR_TIME}?|${DUR_TIME}|\\d+W)`,
  email: `${EMAIL_LOCAL}@${DOMAIN}`,
  hostname: HOSTNAME,
  ipv4: IPV4,
  ipv6: ipv6(),
  uuid: UUID,
  uri: URI,
  'uri-reference': `(?:${URI}|${RELATIVE_REF})`,
};
