// Errors as the OpenAI API reports them: an HTTP status and
// { "error": { "message", "type", "param", "code" } }.

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | number | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Allow, Retry-After, WWW-Authenticate). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError(400, message, 'invalid_request_error', param, code);

export const unauthorized = (): ApiError =>
  new ApiError(
    401,
    'Incorrect or missing API key: send it as "Authorization: Bearer KEY".',
    'authentication_error',
    null,
    'invalid_api_key',
    {
      'WWW-Authenticate': 'Bearer',
    },
  );

export const routeNotFound = (path: string): ApiError =>
  new ApiError(404, `No route for ${path}.`, 'not_found_error', null, 'not_found');

export const modelNotFound = (model: string, served: string): ApiError =>
  new ApiError(
    404,
    `The model \`${model}\` does not exist. This server serves \`${served}\`.`,
    'not_found_error',
    'model',
    'model_not_found',
  );

export const methodNotAllowed = (method: string, path: string, allow: string[]): ApiError =>
  new ApiError(
    405,
    `Method ${method} is not allowed for ${path}; use ${allow.join(' or ')}.`,
    'invalid_request_error',
    null,
    'method_not_allowed',
    {
      Allow: allow.join(', '),
    },
  );

export const payloadTooLarge = (limit: number): ApiError =>
  new ApiError(
    413,
    `The request body is larger than the limit of ${limit} bytes.`,
    'invalid_request_error',
    null,
    'request_too_large',
  );

export const queueFull = (maxQueue: number): ApiError =>
  new ApiError(
    429,
    `The server is busy: ${maxQueue} requests are already waiting. Retry later.`,
    'rate_limit_error',
    null,
    'rate_limit_exceeded',
    {
      'Retry-After': '1',
    },
  );

export const unavailable = (message = 'The server is shutting down.'): ApiError =>
  new ApiError(503, message, 'server_error', null, 'service_unavailable');

export const internalError = (message: string): ApiError =>
  new ApiError(500, message, 'server_error', null, 'internal_error');

/**
 * The raw HTTP response for an error Node's parser reports on a connection (the 'clientError'
 * event: no request object exists), as OpenAI JSON: 408 when the headers or the request did not
 * arrive within headersTimeout / requestTimeout, 431 for headers over the size limit, 400 for
 * anything else malformed. The connection is closed after it.
 */
export function clientErrorResponse(err: NodeJS.ErrnoException): string {
  let e: ApiError;
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      e = new ApiError(
        408,
        'The request did not arrive in time (its headers within headersTimeout, all of it within requestTimeout).',
        'invalid_request_error',
        null,
        'request_timeout',
      );
      break;
    case 'HPE_HEADER_OVERFLOW':
      e = new ApiError(
        431,
        'The request headers are larger than the server accepts.',
        'invalid_request_error',
        null,
        'headers_too_large',
      );
      break;
    default:
      e = badRequest(
        `Malformed HTTP request: ${err.message}${err.code ? ` (${err.code})` : ''}.`,
        null,
        'bad_http_request',
      );
  }
  const reason = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' }[e.status];
  const body = JSON.stringify(e.toBody());
  return (
    `HTTP/1.1 ${e.status} ${reason}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}
