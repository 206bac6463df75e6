/**
 * Authorization Type of a sending account: a person's sign-in (Delegated, the seed's), or the application's
 * own — Microsoft client credentials (a Client Secret or a Certificate Postern generates) and Google service
 * accounts with domain-wide delegation. Its page is under the account's own settings
 * (/settings/send/accounts/<id>/authorization), for the seed's accounts as for added ones.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ENTRA_APP_ONLY_STEPS, exchangeAppOnlySteps, googleDomainWideDelegationSteps, SERVICE_ACCOUNT_KEY_MAX_BYTES, type SetupStep } from '../../oauth/app-only.js';
import type { FieldErrors } from '../../oauth/basic-settings.js';
import type { AuthorizationType } from '../../store/schema.js';
import type { WebContext, WebPluginOptions } from '../context.js';
import { checkbox, formBody, none, text, URL_MAX } from '../form.js';
import { ACCOUNT_ID, ACCOUNT_ROUTE, accountPathOf, displayNameOf, resolveAccount, type ResolvedAccount } from './oauth-account.js';

const accountParams = z.object({ account: z.string({ error: 'is not an account id' }).regex(ACCOUNT_ID, { error: 'is not an account id Postern gave out' }) });

/** The types each provider offers, in the order the page shows them. */
const TYPES = { microsoft: ['delegated', 'client-credentials'], google: ['delegated', 'service-account'] } as const;

interface AuthorizationForm {
  authorizationType: string;
  tenantId: string;
  clientId: string;
  credential: string;
  /** Never shown back: empty keeps the stored secret. */
  hasClientSecret: boolean;
  mailbox: string;
  endpoint: string;
  enabled: boolean;
  verifyServerCertificate: boolean;
  addCnToVerificationItems: boolean;
}

interface Certificate {
  certificatePem: string;
  thumbprint: string;
  notAfter: string;
}

/** The tenant an endpoint names (https://login.microsoftonline.com/<tenant>/oauth2/v2.0), if any. */
function tenantOf(endpoint: string | null): string {
  if (!endpoint) return '';
  try {
    const tenant = new URL(endpoint).pathname.split('/')[1] ?? '';
    return /^(common|organizations|consumers)$/i.test(tenant) ? '' : tenant;
  } catch {
    return '';
  }
}

async function storedForm(web: WebContext, account: ResolvedAccount): Promise<AuthorizationForm> {
  const status = await web.oauth.status(account.id);
  return {
    authorizationType: status.authorizationType,
    tenantId: tenantOf(status.settings.endpoint),
    clientId: status.settings.clientId ?? '',
    credential: account.row.client_secret_enc === null && account.row.client_certificate !== null ? 'certificate' : 'secret',
    hasClientSecret: status.settings.hasClientSecret,
    mailbox: status.appMailbox ?? '',
    endpoint: status.settings.endpoint ?? '',
    enabled: status.enabled,
    verifyServerCertificate: status.settings.verifyServerCertificate,
    addCnToVerificationItems: status.settings.addCnToVerificationItems,
  };
}

function stepsOf(account: ResolvedAccount, form: AuthorizationForm): SetupStep[] {
  if (account.row.provider === 'google') return googleDomainWideDelegationSteps({ clientId: account.row.client_id ?? '<client ID>' });
  const clientId = form.clientId.trim() || '<Application (client) ID>';
  return [
    ...ENTRA_APP_ONLY_STEPS,
    ...exchangeAppOnlySteps({ clientId, mailbox: form.mailbox.trim() || undefined, via: account.row.delivery_method === 'graph' ? 'graph' : 'smtp' }),
  ];
}

async function renderPage(
  request: FastifyRequest,
  reply: FastifyReply,
  account: ResolvedAccount,
  form: AuthorizationForm,
  errors: FieldErrors,
  certificate?: Certificate,
  code = 200,
) {
  const path = accountPathOf(account.id);
  return reply.render(
    'authorization-type',
    {
      title: request.t('auth.heading'),
      provider: account.row.provider,
      accountName: displayNameOf(account.row, request.t),
      base: account.base,
      path,
      form,
      errors,
      types: TYPES[account.row.provider],
      steps: stepsOf(account, form),
      certificate: certificate ?? null,
      hasCertificate: account.row.client_certificate !== null,
    },
    code,
  );
}

export const authorizationTypeRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  app.get(`${ACCOUNT_ROUTE}/authorization`, { preValidation: web.requireSendSettings, schema: { params: accountParams, querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply);
    if (!account) return reply;
    return renderPage(request, reply, account, await storedForm(web, account), {});
  });

  const authorizationForm = formBody({
    authorizationType: text(),
    tenantId: text(),
    clientId: text(),
    credential: text(),
    clientSecret: text(),
    mailbox: text(),
    endpoint: text(URL_MAX),
    keyJson: text(SERVICE_ACCOUNT_KEY_MAX_BYTES),
    enabled: checkbox(),
    verifyServerCertificate: checkbox(),
    addCnToVerificationItems: checkbox(),
  });
  app.post(`${ACCOUNT_ROUTE}/authorization`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: accountParams, body: authorizationForm } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply);
    if (!account) return reply;
    const body = request.body;
    const actor = request.user!.username;
    const provider = account.row.provider;
    const type = (TYPES[provider] as readonly string[]).find((t) => t === body.authorizationType) as AuthorizationType | undefined;
    const form: AuthorizationForm = {
      authorizationType: type ?? account.row.authorization_type,
      tenantId: body.tenantId,
      clientId: body.clientId,
      credential: body.credential === 'certificate' ? 'certificate' : 'secret',
      hasClientSecret: account.row.client_secret_enc !== null,
      mailbox: body.mailbox,
      endpoint: body.endpoint,
      enabled: body.enabled,
      verifyServerCertificate: body.verifyServerCertificate,
      addCnToVerificationItems: body.addCnToVerificationItems,
    };
    if (!type) return renderPage(request, reply, account, form, { authorizationType: request.t('auth.typeInvalid') }, undefined, 400);
    if (type === 'delegated') {
      await web.oauth.application.useDelegated(account.id, actor);
      web.setFlash(request, { type: 'success', text: request.t('auth.savedDelegated') });
      return reply.redirect(account.base, 303);
    }
    const credential = body.credential === 'secret' || body.credential === 'certificate' ? body.credential : undefined;
    if (provider === 'microsoft' && !credential) return renderPage(request, reply, account, form, { credential: request.t('auth.credentialInvalid') }, undefined, 400);
    const useAndTls = { enabled: body.enabled, verifyServerCertificate: body.verifyServerCertificate, addCnToVerificationItems: body.addCnToVerificationItems };
    const result =
      provider === 'microsoft'
        ? await web.oauth.application.saveMicrosoft(
            account.id,
            {
              ...useAndTls,
              tenantId: body.tenantId,
              clientId: body.clientId,
              credential: credential!,
              clientSecret: body.clientSecret,
              mailbox: body.mailbox,
              endpoint: body.endpoint,
            },
            actor,
          )
        : await web.oauth.application.saveGoogle(account.id, { ...useAndTls, keyJson: body.keyJson, mailbox: body.mailbox }, actor);
    if (!result.ok) return renderPage(request, reply, account, form, result.errors, undefined, 400);
    web.setFlash(request, { type: 'success', text: request.t('auth.savedApplication') });
    return reply.redirect(account.base, 303);
  });

  app.post(`${ACCOUNT_ROUTE}/certificate`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: accountParams, body: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'microsoft');
    if (!account) return reply;
    const generated = await web.oauth.application.generateCertificate(account.id, request.user!.username);
    const updated = (await resolveAccount(web, request, reply, 'microsoft'))!;
    const form = { ...(await storedForm(web, updated)), authorizationType: 'client-credentials', credential: 'certificate' };
    return renderPage(request, reply, updated, form, {}, { certificatePem: generated.certificatePem, thumbprint: generated.thumbprint, notAfter: generated.notAfter.toISOString() });
  });

  app.get(`${ACCOUNT_ROUTE}/certificate.pem`, { preValidation: web.requireSendSettings, schema: { params: accountParams, querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'microsoft');
    if (!account) return reply;
    const pem = account.row.client_certificate;
    if (pem === null) return reply.render('error', { title: request.t('error.notFound'), message: request.t('auth.noCertificate') }, 404);
    return reply
      .header('content-type', 'application/x-pem-file')
      .header('content-disposition', `attachment; filename="postern-${account.id}.pem"`)
      .send(pem);
  });

  app.post(`${ACCOUNT_ROUTE}/token`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: accountParams, body: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply);
    if (!account) return reply;
    if (account.row.authorization_type === 'delegated') {
      return reply.render('error', { title: request.t('error.notAccepted'), message: request.t('auth.tokenDelegated') }, 400);
    }
    await web.oauth.application.requestToken(account.id, request.user!.username);
    web.setFlash(request, { type: 'success', text: request.t('auth.tokenRequested') });
    return reply.redirect(account.base, 303);
  });
};
