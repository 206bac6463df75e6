/**
 * The JSON API, `/api/v1`: an encapsulated Fastify plugin inside the Remote UI's app, for automation that
 * drives Postern without the Remote UI. Every route has zod schemas for its request and its responses; the
 * same schemas make the OpenAPI 3.1 document at `/api/v1/openapi.json` (docs/api.md).
 *
 * Inputs: HTTP requests with `Authorization: Bearer <token>` (RFC 6750 §2.1), tokens made on the API Tokens
 * page (src/api/tokens.ts). Outputs: JSON, and calls into the owners (MessageQueue, OAuthService,
 * DeviceAccounts, EmailSettings, RelaySettings, AuditLog); every change is audited with the token's name.
 *
 * Failure modes: a missing, malformed, unknown, expired or revoked token is answered 401 with
 * `WWW-Authenticate: Bearer` (RFC 6750 §3); a scope that does not allow the request 403; too many failed
 * authentications from one address 429 (src/api/auth-throttle.ts); every error is `{ "error": { "code",
 * "message" } }` with a code from src/errors.ts, never a stack trace. The API is not cookie-authenticated: a
 * session cookie neither signs a request in nor is set on a response, so no CSRF token is needed.
 * Known limits: the throttle counts per process; bodies are limited to 64 KiB.
 */
import fastifySwagger from '@fastify/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { ErrorCodes, type ErrorCode } from '../errors.js';
import { describeError, scrubSecrets } from '../log.js';
import type { ApiScope } from '../store/schema.js';
import { ApiAuthThrottle } from './auth-throttle.js';
import { ApiError, errorBody, type ApiDependencies } from './common.js';
import { deviceRoutes } from './routes/devices.js';
import { queueRoutes } from './routes/queue.js';
import { settingsRoutes } from './routes/settings.js';
import { accountRoutes } from './routes/accounts.js';
import { statusRoutes } from './routes/status.js';
import { scopeAllows, type ApiToken } from './tokens.js';

export type { ApiDependencies } from './common.js';
export const API_PREFIX = '/api/v1';
const REALM = 'Postern API';

declare module 'fastify' {
  interface FastifyRequest {
    /** The API token the request authenticated with (API routes only). */
    apiToken?: ApiToken;
  }
  interface FastifyContextConfig {
    /** API routes: the scope a token needs; `public`: no token at all (the OpenAPI document). */
    apiScope?: ApiScope | 'public';
  }
}

const DEFAULT_REQUESTS_PER_MINUTE = 600;

/** A request validation failure in words: where and what, for the first few issues. */
function validationMessage(error: { validation?: Array<{ instancePath?: string; message?: string }>; validationContext?: string }): string {
  const issues = (error.validation ?? []).slice(0, 5).map((issue) => {
    const where = `${error.validationContext ?? 'request'}${(issue.instancePath ?? '').replace(/\//g, '.')}`;
    // zod says "Invalid input: expected string, received undefined" for a missing field; say it plainly.
    const message = /received undefined$/.test(issue.message ?? '') ? 'is required' : (issue.message ?? 'invalid');
    return `${where}: ${message}`;
  });
  return `The request is not valid: ${issues.join('; ') || 'it does not match the schema'}.`;
}

export const apiPlugin: FastifyPluginAsyncZod<ApiDependencies> = async (app, deps) => {
  const throttle = deps.throttle ?? new ApiAuthThrottle();
  // Per token, one atomic consume per request (a check-then-act count could be outrun by a parallel burst).
  const perToken = new RateLimiterMemory({ points: deps.requestsPerMinute ?? DEFAULT_REQUESTS_PER_MINUTE, duration: 60 });
  const log = deps.log.child({ component: 'api' });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // JSON only: the Remote UI's form parser is not for the API.
  app.removeContentTypeParser('application/x-www-form-urlencoded');

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Postern API',
        version: '1.0.0',
        description: 'Drive Postern without the Remote UI: status, queue, log, relay device accounts and settings. See docs/api.md.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'An API token (pst_…) from Settings/Registration > Management > API Tokens' } } },
      security: [{ bearerAuth: [] }],
    },
    transform: jsonSchemaTransform,
  });

  app.decorateRequest('apiToken', undefined);

  const reject = (reply: FastifyReply, status: number, code: ErrorCode, message: string, challenge?: string) => {
    if (challenge !== undefined) reply.header('www-authenticate', challenge);
    return reply.code(status).type('application/json; charset=utf-8').send(errorBody(code, message));
  };
  const challenge = (description: string) => `Bearer realm="${REALM}", error="invalid_token", error_description="${description}"`;

  /** RFC 6750 §2.1: `Authorization: Bearer <token>`; before the body is read, so a stranger's body is never parsed. */
  const authenticate = async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers.authorization;
    if (header === undefined || header.trim() === '') {
      return reject(reply, 401, ErrorCodes.API_TOKEN_MISSING, 'Send an API token: Authorization: Bearer <token>.', `Bearer realm="${REALM}"`);
    }
    const address = request.ip;
    const attempt = await throttle.reserve(address);
    if (!attempt.allowed) {
      log.warn({ address }, 'API request refused: too many failed authentications');
      reply.header('retry-after', String(attempt.retryAfterSeconds));
      return reject(reply, 429, ErrorCodes.API_RATE_LIMITED, `Too many failed authentications from ${address}. Try again in ${attempt.retryAfterSeconds} seconds.`);
    }
    let result;
    try {
      const match = /^Bearer +([^\s]+) *$/i.exec(header);
      result = match ? await deps.tokens.authenticate(match[1]!) : ({ ok: false, reason: 'invalid' } as const);
    } catch (error) {
      // Not the client's failure: the reservation is given back.
      attempt.succeeded();
      throw error;
    }
    if (result.ok) {
      attempt.succeeded();
      request.apiToken = result.token;
      return;
    }
    attempt.failed();
    const name = 'token' in result ? result.token.name : null;
    await deps.audit.record(name, 'api.auth_failed', `from ${address}: ${result.reason}`);
    log.warn({ address, reason: result.reason, tokenName: name }, 'API authentication failed');
    if (result.reason === 'expired') {
      return reject(reply, 401, ErrorCodes.API_TOKEN_EXPIRED, `The API token ${name} expired on ${new Date(result.token.expiresAt).toISOString().slice(0, 10)}. Create a new one on the API Tokens page.`, challenge('The token expired'));
    }
    if (result.reason === 'revoked') {
      return reject(reply, 401, ErrorCodes.API_TOKEN_REVOKED, `The API token ${name} was revoked. Create a new one on the API Tokens page.`, challenge('The token was revoked'));
    }
    return reject(reply, 401, ErrorCodes.API_TOKEN_INVALID, 'The API token is not valid (malformed or unknown). Send Authorization: Bearer pst_…', challenge('The token is not valid'));
  };

  app.addHook('onRequest', async (request, reply) => {
    // An unknown path needs a token too (it says nothing to a stranger), but any scope may be told it is unknown.
    const scope = request.is404 ? 'read' : request.routeOptions.config.apiScope;
    if (scope === 'public') return;
    await authenticate(request, reply);
    if (reply.sent) return reply;
    if (!request.apiToken) throw new Error('API request neither authenticated nor refused');
    try {
      await perToken.consume(request.apiToken.id);
    } catch (refusal) {
      if (!(refusal instanceof RateLimiterRes)) throw refusal;
      const seconds = Math.max(1, Math.ceil(refusal.msBeforeNext / 1000));
      log.warn({ tokenName: request.apiToken.name }, 'API request refused: the token sent too many requests');
      reply.header('retry-after', String(seconds));
      return reject(
        reply,
        429,
        ErrorCodes.API_RATE_LIMITED,
        `The API token ${request.apiToken.name} sent more than ${deps.requestsPerMinute ?? DEFAULT_REQUESTS_PER_MINUTE} requests in a minute. Try again in ${seconds} seconds.`,
      );
    }
    const needed = scope ?? 'administer';
    if (!scopeAllows(request.apiToken.scope, needed)) {
      return reject(
        reply,
        403,
        ErrorCodes.API_SCOPE_INSUFFICIENT,
        `The API token ${request.apiToken.name} has scope ${request.apiToken.scope}; this request needs ${needed}.`,
        `Bearer realm="${REALM}", error="insufficient_scope", scope="${needed}"`,
      );
    }
  });

  app.addHook('onSend', async (_request, reply, payload) => {
    // The API is not cookie-authenticated: no session cookie is set (or renewed) by its answers.
    reply.removeHeader('set-cookie');
    reply.header('cache-control', 'no-store');
    return payload;
  });

  app.setNotFoundHandler(async (request, reply) =>
    reject(reply, 404, ErrorCodes.API_NOT_FOUND, `There is no API endpoint ${request.method} ${request.url.split('?')[0]}.`),
  );

  app.setErrorHandler(async (error: Error & { code?: string; statusCode?: number; validation?: unknown[]; validationContext?: string }, request, reply) => {
    if (error instanceof ApiError) return reply.code(error.statusCode).send(errorBody(error.code, error.message, error.fields));
    if (error.validation) return reply.code(400).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, validationMessage(error as never)));
    if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.code(415).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, 'Send the body as JSON (Content-Type: application/json).'));
    }
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.code(413).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, 'The body is larger than 64 KiB.'));
    if (error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error instanceof SyntaxError) {
      return reply.code(400).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, 'The body is not valid JSON.'));
    }
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return reply.code(error.statusCode).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, scrubSecrets(error.message)));
    }
    request.log.error({ err: describeError(error), reqId: request.id, method: request.method, path: request.url.split('?')[0] }, 'unexpected error in the API');
    return reply.code(500).send(errorBody(ErrorCodes.API_UNEXPECTED, `An unexpected error occurred. It was logged with reference ${request.id}.`));
  });

  app.get(
    '/openapi.json',
    { config: { apiScope: 'public' }, schema: { summary: 'This API as an OpenAPI 3.1 document (no token needed)', tags: ['meta'], security: [] } },
    async () => app.swagger(),
  );
  // The route modules get the dependencies, not this plugin's own options (its prefix would apply twice).
  const { prefix: _prefix, ...routeDeps } = deps as ApiDependencies & { prefix?: string };
  for (const routes of [statusRoutes, accountRoutes, queueRoutes, deviceRoutes, settingsRoutes]) await app.register(routes, routeDeps);
};
