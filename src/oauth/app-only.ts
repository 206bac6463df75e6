/**
 * App-only authorization: an application (Microsoft) or a service account (Google) obtains tokens for
 * mailboxes without anyone signing in. The protocol steps are in client-credentials.ts (Microsoft, RFC 6749
 * §4.4 with a secret or a private key JWT) and service-account.ts (Google, RFC 7523 §2.1); this module is
 * their one entry point, with the steps an administrator takes at the provider, as plain English for the
 * Remote UI's pages (the web layer translates them).
 *
 * Keys and secrets are the caller's to keep, encrypted at rest (src/store/secret-box.ts); nothing here stores
 * anything.
 */
export {
  AppOnlyCredentialError,
  CLIENT_ASSERTION_LIFETIME_S,
  certificateThumbprints,
  clientCredentialsGrant,
  generateClientCertificate,
  type AppOnlyClient,
  type CertificateThumbprints,
  type ClientCertificate,
  type ClientCredential,
} from './client-credentials.js';
export {
  JWT_BEARER_GRANT,
  SERVICE_ACCOUNT_ASSERTION_LIFETIME_S,
  SERVICE_ACCOUNT_KEY_MAX_BYTES,
  parseServiceAccountKey,
  serviceAccountGrant,
  signServiceAccountAssertion,
  type ServiceAccountAssertionClaims,
  type ServiceAccountKey,
} from './service-account.js';
export { MICROSOFT_APP_ONLY_GRAPH_SCOPE, MICROSOFT_APP_ONLY_SMTP_SCOPE, validateMicrosoftAppOnlyEndpoint } from './profiles.js';
export type { AuthorizationFlow } from './provider-errors.js';

/** One step of an administrator's set-up: a title and what to do, in order. */
export interface SetupStep {
  title: string;
  text: string;
}

/** Microsoft Entra ID: the app registration for app-only sending (SMTP or Graph). */
export const ENTRA_APP_ONLY_STEPS: readonly SetupStep[] = Object.freeze([
  {
    title: 'Register the application',
    text: 'In the Microsoft Entra admin center open Identity > Applications > App registrations > New registration. Give it a name (for example Postern), choose "Accounts in this organizational directory only" and register. Copy the Application (client) ID and the Directory (tenant) ID from the Overview page.',
  },
  {
    title: 'Upload the certificate (recommended)',
    text: 'Open Certificates & secrets > Certificates > Upload certificate and upload the certificate Postern generated (.cer or .pem). Entra ID shows its Thumbprint; it must match the one Postern shows. Postern keeps the private key; it never leaves this gateway. Generate a new certificate before the current one expires.',
  },
  {
    title: 'Or add a client secret',
    text: 'Open Certificates & secrets > Client secrets > New client secret. Copy the Value at once (it is shown only once); the Secret ID is not the secret. Note the expiry date: sending stops when the secret expires.',
  },
  {
    title: 'Add the application permission',
    text: 'Open API permissions > Add a permission > APIs my organization uses > Office 365 Exchange Online > Application permissions > SMTP.SendAsApp. For sending through Microsoft Graph choose Microsoft Graph > Application permissions > Mail.Send instead. Delegated permissions (SMTP.Send) are not used for app-only sending.',
  },
  {
    title: 'Grant admin consent',
    text: 'On the API permissions page select "Grant admin consent for <your organization>". The status of the permission must read "Granted".',
  },
  {
    title: 'Enter the tenant in the endpoint',
    text: 'In Postern, use https://login.microsoftonline.com/<Directory (tenant) ID>/oauth2/v2.0 (or your tenant domain instead of the ID). common, organizations and consumers cannot be used for app-only authorization.',
  },
]);

/**
 * Exchange Online: what an Exchange administrator runs (Exchange Online PowerShell) before the application
 * may send as a mailbox. Missing any of it shows up as `535 5.7.3 Authentication unsuccessful` at SMTP.
 */
export function exchangeAppOnlySteps(details: { clientId: string; mailbox?: string; via?: 'smtp' | 'graph' }): SetupStep[] {
  const appId = details.clientId;
  const mailbox = details.mailbox ?? '<mailbox>';
  const role = details.via === 'graph' ? 'Application Mail.Send' : 'Application SMTP.SendAsApp';
  return [
    {
      title: 'Connect to Exchange Online PowerShell',
      text: 'Run Connect-ExchangeOnline as an Exchange administrator (module ExchangeOnlineManagement).',
    },
    {
      title: 'Register the application\'s service principal in Exchange',
      text: `Run New-ServicePrincipal -AppId ${appId} -ObjectId <object ID> -DisplayName Postern. The object ID is the one of the Enterprise application (Microsoft Entra admin center > Enterprise applications > Postern > Overview), not the Object ID on the App registration's page.`,
    },
    {
      title: 'Allow the application to send',
      text: `Run New-ManagementRoleAssignment -App ${appId} -Role "${role}". To allow only some mailboxes, first create a scope, for example New-ManagementScope -Name "Postern mailboxes" -RecipientRestrictionFilter "PrimarySmtpAddress -eq '${mailbox}'", and add -CustomResourceScope "Postern mailboxes" to the role assignment. Application Access Policies (New-ApplicationAccessPolicy) are deprecated and are not needed.`,
    },
    {
      title: 'Or give the application full access to the mailbox',
      text: `Instead of the role assignment you may run Add-MailboxPermission -Identity ${mailbox} -User <service principal> -AccessRights FullAccess. This grants more than sending.`,
    },
    {
      title: 'Allow SMTP AUTH for the mailbox',
      text: `SMTP AUTH must be on for the mailbox: Set-CASMailbox -Identity ${mailbox} -SmtpClientAuthenticationDisabled $false (if it is turned off for the whole organization). Changes can take up to an hour to apply.`,
    },
  ];
}

/** Google Workspace Admin console: domain-wide delegation of the service account. */
export function googleDomainWideDelegationSteps(details: { clientId: string; scope?: string }): SetupStep[] {
  const scope = details.scope ?? 'https://mail.google.com/';
  return [
    {
      title: 'Create the service account and its key',
      text: 'In the Google Cloud console open IAM & Admin > Service Accounts > Create service account. Open it, then Keys > Add key > Create new key > JSON, and upload the downloaded file to Postern. Keep no other copy: whoever holds it can send as any mailbox of the delegation.',
    },
    {
      title: 'Turn on the Gmail API',
      text: 'In the same project open APIs & Services > Library > Gmail API and select Enable.',
    },
    {
      title: 'Add the domain-wide delegation',
      text: `A super administrator opens the Google Admin console (admin.google.com) > Security > Access and data control > API controls > Manage Domain Wide Delegation > Add new, enters the client ID ${details.clientId} and the OAuth scope ${scope}, and selects Authorize. It can take a few minutes, at times up to 24 hours, to apply.`,
    },
    {
      title: 'Choose the mailbox',
      text: 'Enter the address of a user of your Google Workspace domain for Postern to send as. Consumer Gmail addresses (@gmail.com) cannot be used with a service account.',
    },
  ];
}

/** The SMTP refusal that means an Exchange step is missing, in words for the delivery advice. */
export const EXCHANGE_APP_ONLY_535_ADVICE =
  'Exchange Online refused the application for this mailbox (535 5.7.3). Check that the application\'s service principal is registered in Exchange (New-ServicePrincipal with the Enterprise application\'s object ID), that it was given the role "Application SMTP.SendAsApp" for this mailbox (New-ManagementRoleAssignment) or FullAccess to it, that SMTP.SendAsApp has admin consent, and that SMTP AUTH is allowed for the mailbox.';
