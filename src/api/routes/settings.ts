/**
 * E-Mail Settings and Relay Settings: read without secrets, and changed field by field with the owners'
 * validate() (the pages' checks and messages) and save() (which the pages use, so the change takes effect the same way).
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ErrorCodes } from '../../errors.js';
import { PROVIDER_LABELS, accountLabel } from '../../oauth/profiles.js';
import { relaySettingsInputOf, type RelaySettingsInput } from '../../smtp-in/relay-settings.js';
import { emailSettingsInputOf, TLS_MODE_LABELS, type EmailSettingsInput } from '../../smtp-out/email-settings.js';
import { ApiError, AUTH_ERRORS, auditChange, BODY_LIMIT, INPUT_ERRORS, type ApiDependencies } from '../common.js';
import { EmailSettingsShape, emailSettingsShape, RelaySettingsShape, relaySettingsShape, SettingsBody } from '../shapes.js';



/** Field errors of the owners' validate(), as one message and per field. */
function invalidSettings(errors: Partial<Record<string, string>>): ApiError {
  const fields = Object.fromEntries(Object.entries(errors).filter((entry): entry is [string, string] => typeof entry[1] === 'string'));
  return new ApiError(400, ErrorCodes.WEB_INVALID_INPUT, Object.values(fields).join(' '), fields);
}


export const settingsRoutes: FastifyPluginAsyncZod<ApiDependencies> = async (app, deps) => {
  const settingsBody = async () => ({
    email: emailSettingsShape(await deps.emailSettings.get()),
    relay: relaySettingsShape(await deps.relaySettings.get(), await deps.relaySettings.certificate()),
  });

  app.get(
    '/settings',
    { config: { apiScope: 'read' }, schema: { summary: 'E-Mail Settings and Relay Settings (never a secret)', tags: ['settings'], response: { 200: SettingsBody, ...AUTH_ERRORS } } },
    settingsBody,
  );

  app.patch(
    '/settings/email',
    {
      config: { apiScope: 'administer' },
      bodyLimit: BODY_LIMIT,
      schema: {
        summary: 'Change E-Mail Settings: the fields given; checked as the E-Mail Settings page checks them',
        tags: ['settings'],
        body: z.object({
          accountId: z.string().max(100).optional().describe('microsoft or google'),
          smtpHost: z.string().max(1000).optional(),
          smtpPort: z.number().optional(),
          tlsMode: z.string().max(100).optional().describe('starttls or tls'),
          verifyServerCertificate: z.boolean().optional(),
          addCnToVerificationItems: z.boolean().optional(),
          senderAddress: z.string().max(1000).nullable().optional().describe('null or "": the authorized mailbox'),
          allowedFromAddresses: z.array(z.string().max(1000)).max(1000).optional(),
          messagesPerMinute: z.number().optional().describe('0: no limit'),
        }),
        response: { 200: z.object({ email: EmailSettingsShape }), ...INPUT_ERRORS, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const body = request.body;
      const form = emailSettingsInputOf(await deps.emailSettings.get());
      const input: EmailSettingsInput = {
        accountId: body.accountId ?? form.accountId,
        smtpHost: body.smtpHost ?? form.smtpHost,
        smtpPort: body.smtpPort === undefined ? form.smtpPort : String(body.smtpPort),
        tlsMode: body.tlsMode ?? form.tlsMode,
        verifyServerCertificate: body.verifyServerCertificate ?? form.verifyServerCertificate,
        addCnToVerificationItems: body.addCnToVerificationItems ?? form.addCnToVerificationItems,
        senderAddress: body.senderAddress === undefined ? form.senderAddress : (body.senderAddress ?? ''),
        allowedFromAddresses: body.allowedFromAddresses === undefined ? form.allowedFromAddresses : body.allowedFromAddresses.join('\n'),
        messagesPerMinute: body.messagesPerMinute === undefined ? form.messagesPerMinute : String(body.messagesPerMinute),
      };
      const result = deps.emailSettings.validate(input);
      if (!result.ok) throw invalidSettings(result.errors);
      await deps.emailSettings.save(result.value);
      const v = result.value;
      await auditChange(
        deps.audit,
        request,
        'email-settings.saved',
        `${accountLabel(v.accountId)} via ${v.smtpHost}:${v.smtpPort} ${TLS_MODE_LABELS[v.tlsMode]}, sender ${v.senderAddress ?? 'the authorized mailbox'}, verify ${v.tls.verifyServerCertificate ? 'on' : 'off'}, CN ${v.tls.addCnToVerificationItems ? 'on' : 'off'}, ${v.messagesPerMinute}/min`,
      );
      return { email: emailSettingsShape(await deps.emailSettings.get()) };
    },
  );

  app.patch(
    '/settings/relay',
    {
      config: { apiScope: 'administer' },
      bodyLimit: BODY_LIMIT,
      schema: {
        summary: 'Change Relay Settings: the fields given; checked as the Relay Settings page checks them',
        tags: ['settings'],
        body: z.object({
          allowedNetworks: z.array(z.string().max(1000)).max(1000).optional(),
          maxMessageSizeMb: z.number().optional(),
          allowInsecureAuth: z.boolean().optional(),
          allowLegacyTls: z.boolean().optional(),
          bareNewlines: z.string().max(100).optional().describe('normalize or reject'),
        }),
        response: { 200: z.object({ relay: RelaySettingsShape }), ...INPUT_ERRORS, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const body = request.body;
      const form = relaySettingsInputOf(await deps.relaySettings.get());
      const input: RelaySettingsInput = {
        allowedNetworks: body.allowedNetworks === undefined ? form.allowedNetworks : body.allowedNetworks.join('\n'),
        maxMessageSizeMb: body.maxMessageSizeMb === undefined ? form.maxMessageSizeMb : String(body.maxMessageSizeMb),
        allowInsecureAuth: body.allowInsecureAuth ?? form.allowInsecureAuth,
        allowLegacyTls: body.allowLegacyTls ?? form.allowLegacyTls,
        bareNewlines: body.bareNewlines ?? form.bareNewlines,
      };
      const result = deps.relaySettings.validate(input);
      if (!result.ok) throw invalidSettings(result.errors);
      await deps.relaySettings.save(result.value);
      const v = result.value;
      await auditChange(
        deps.audit,
        request,
        'relay-settings.saved',
        `networks [${v.allowedNetworks.join(' ')}], max ${v.maxMessageSize} bytes, bare CR/LF ${v.bareNewlines}, insecure AUTH ${v.allowInsecureAuth ? 'on' : 'off'}, legacy TLS ${v.allowLegacyTls ? 'on' : 'off'}`,
      );
      return { relay: relaySettingsShape(await deps.relaySettings.get(), await deps.relaySettings.certificate()) };
    },
  );
};
