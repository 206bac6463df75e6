/**
 * The language switch on every page: a link to /language?lang=ru&next=<this page>. It remembers the choice in
 * the `lang` cookie (a year) and goes back to the page, a path on this site only (as login's `next`). A GET
 * that changes nothing but the display language of the browser that follows it: no CSRF token is needed.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { LANG_COOKIE, LANGUAGES } from '../i18n/index.js';
import type { WebPluginOptions } from '../context.js';
import { ignoredWhenInvalid } from '../form.js';
import { safeNext } from './auth.js';

const ONE_YEAR_S = 365 * 24 * 60 * 60;

export const languageRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  const query = z.object({ lang: ignoredWhenInvalid(z.enum(LANGUAGES)), next: ignoredWhenInvalid(z.string().max(2048)) });
  app.get('/language', { schema: { querystring: query } }, async (request, reply) => {
    const { lang, next } = request.query;
    if (lang) {
      reply.setCookie(LANG_COOKIE, lang, {
        path: '/',
        maxAge: ONE_YEAR_S,
        sameSite: 'lax',
        httpOnly: true,
        secure: web.httpsPort ? true : 'auto',
      });
    }
    return reply.redirect(safeNext(next), 303);
  });
};
