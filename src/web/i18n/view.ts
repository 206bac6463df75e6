/**
 * What every page's template gets for its language: `t`, the formatters, and the words for the states the
 * services report as codes (Token Status, Server Connection Status, queue states, On/Off). The services keep
 * their English words for the API and the logs; the pages translate the codes here.
 */
import type { ConnectionStatus } from '../../oauth/connection-check.js';
import type { QueueState, TokenStatus } from '../../store/schema.js';
import type { MenuItem } from '../context.js';
import { domainText } from './domain.js';
import { formatters, LANGUAGE_NAMES, LANGUAGES, translator, type Formatters, type Lang, type MessageKey, type Translate } from './index.js';

const TOKEN_KEYS: Record<TokenStatus, MessageKey> = {
  NotRegistered: 'token.NotRegistered',
  WaitingForAuthorization: 'token.WaitingForAuthorization',
  Active: 'token.Active',
  Expired: 'token.Expired',
  Error: 'token.Error',
};

export const QUEUE_STATE_KEYS: Record<QueueState, MessageKey> = {
  incoming: 'queue.state.incoming',
  active: 'queue.state.active',
  deferred: 'queue.state.deferred',
  held: 'queue.state.held',
  sent: 'queue.state.sent',
  bounced: 'queue.state.bounced',
};

/** The service's English warnings on the status block, by their start, in the page's language. */
const WARNING_KEYS: Array<[prefix: string, key: MessageKey]> = [
  ['Verify Server Certificate is off', 'status.warningNoVerify'],
  ['Add CN to Verification Items is off', 'status.warningNoCn'],
];

/** "TLS connection to <host> established; the server answered HTTP <n>." (src/oauth/connection-check.ts). */
const CONNECTED = /^TLS connection to (\S+) established; the server answered HTTP (\d{3})\.$/;

interface StatusLike {
  enabled: boolean;
  connection: { status: ConnectionStatus | null; label: string; detail: string | null };
}

export interface ViewHelpers {
  lang: Lang;
  t: Translate;
  fmt: Formatters;
  languages: Array<{ code: Lang; name: string }>;
  menuLabel(item: MenuItem): string;
  tokenLabel(status: TokenStatus): string;
  stateLabel(state: QueueState): string;
  connectionLabel(status: StatusLike): string;
  connectionDetail(status: StatusLike): string;
  onOff(on: boolean): string;
  warningText(text: string): string;
  /** A sentence a service wrote (a field's validation message) in the page's language. */
  msg(text: string | null | undefined): string;
}

export function viewHelpers(lang: Lang): ViewHelpers {
  const t = translator(lang);
  return {
    lang,
    t,
    fmt: formatters(lang, t),
    languages: LANGUAGES.map((code) => ({ code, name: LANGUAGE_NAMES[code] })),
    menuLabel: (item) => (item.labelKey ? t(item.labelKey) : item.label),
    tokenLabel: (status) => (status in TOKEN_KEYS ? t(TOKEN_KEYS[status]) : status),
    stateLabel: (state) => (state in QUEUE_STATE_KEYS ? t(QUEUE_STATE_KEYS[state]) : state),
    connectionLabel: (s) => {
      if (s.connection.status === 'SuccessfullyConnected') return t('connection.SuccessfullyConnected');
      if (s.connection.status === 'ConnectionFailed') return t('connection.ConnectionFailed');
      if (!s.enabled) return t('common.notInUse');
      return s.connection.label === 'Not checked' ? t('connection.notChecked') : s.connection.label;
    },
    connectionDetail: (s) => {
      const detail = s.connection.detail ?? '';
      const match = s.connection.status === 'SuccessfullyConnected' ? CONNECTED.exec(detail) : null;
      if (!match) return domainText(lang, t, detail);
      const [, host = '', code = ''] = match;
      return code === '200' ? t('connection.connectedDetail200', { host }) : t('connection.connectedDetail', { host, code });
    },
    onOff: (on) => t(on ? 'common.on' : 'common.off'),
    msg: (text) => domainText(lang, t, text),
    warningText: (text) => {
      const found = WARNING_KEYS.find(([prefix]) => text.startsWith(prefix));
      return found ? t(found[1]) : text;
    },
  };
}
