"""The e-mails of accounts (R19), in the person's language (R22).

A code e-mail is marked ``Sensitivity: Private``: the log mailer of the
embedded defaults (chat.mail.LogMailer) writes who it was for and its
subject, never its body.  In demo mode the code is shown on the console
instead (``serve --demo``), so that a person can try the flow at once.
"""

from __future__ import annotations

from email.message import EmailMessage

from chat.i18n import notification_text


def code_mail(sender: str, to: str, name: str, language: str, purpose: str, code: str, minutes: int) -> EmailMessage:
    message = _base(sender, to, language, notification_text(f"mail.code_subject.{purpose}", language))
    message["Sensitivity"] = "Private"
    message.set_content("\n".join([
        notification_text("mail.greeting", language, {"name": name}), "",
        notification_text("mail.code_body", language, {"code": code, "minutes": minutes}), "",
        notification_text("mail.code_not_you", language)]))
    message["Content-Language"] = language  # after set_content, which replaces the Content-* headers
    return message


def already_active_mail(sender: str, to: str, name: str, language: str, app_url: str) -> EmailMessage:
    message = _base(sender, to, language, notification_text("mail.already_active_subject", language))
    message.set_content("\n".join([
        notification_text("mail.greeting", language, {"name": name}), "",
        notification_text("mail.already_active_body", language, {"url": app_url}), "",
        notification_text("mail.code_not_you", language)]))
    message["Content-Language"] = language  # after set_content, which replaces the Content-* headers
    return message


def _base(sender: str, to: str, language: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Auto-Submitted"] = "auto-generated"
    return message
