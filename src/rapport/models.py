"""Every table, imported in one place for Alembic and for tests that build a schema."""

from rapport.assistant.models import TriageModel
from rapport.auth.models import (
    ApiToken,
    AuthSession,
    Membership,
    PasswordReset,
    Team,
    TeamMember,
    User,
)
from rapport.automation.models import Rule, Webhook, WebhookDelivery
from rapport.bot.models import (
    BotConversation,
    Integration,
    Intent,
    IntentExample,
    IntentModelBlob,
    UnansweredQuestion,
)
from rapport.channels.email.imap import MailboxState
from rapport.channels.models import Inbox, InboxHealth, UnparsedPayload
from rapport.channels.webchat.models import Visitor
from rapport.conversations.models import (
    Attachment,
    CannedResponse,
    Conversation,
    ConversationGuest,
    ConversationLabel,
    ConversationSla,
    Label,
    Message,
    ReadMarker,
    SlaPolicy,
    Upload,
)
from rapport.customers.models import (
    AttributeDefinition,
    Consent,
    Customer,
    CustomerMerge,
    CustomerTag,
    Event,
    Identity,
    MergeSuggestion,
)
from rapport.db import Base
from rapport.events.models import EventSource, Order
from rapport.jobs.models import Job
from rapport.kb.models import Article, ArticleFeedback, Collection, HelpCenter
from rapport.notifications.models import Notification
from rapport.privacy.models import AuditLog
from rapport.realtime.models import StreamEvent
from rapport.search import install as install_search_index
from rapport.workspaces.models import BusinessCalendar, Workspace

__all__ = [
    "BotConversation",
    "Intent",
    "IntentExample",
    "IntentModelBlob",
    "Integration",
    "UnansweredQuestion",
    "Article",
    "ArticleFeedback",
    "Collection",
    "HelpCenter",
    "TriageModel",
    "install_search_index",
    "ApiToken",
    "Label",
    "PasswordReset",
    "Attachment",
    "AuditLog",
    "AuthSession",
    "Base",
    "Rule",
    "Webhook",
    "WebhookDelivery",
    "BusinessCalendar",
    "CannedResponse",
    "Conversation",
    "ConversationSla",
    "SlaPolicy",
    "ConversationGuest",
    "ConversationLabel",
    "ReadMarker",
    "Upload",
    "Customer",
    "AttributeDefinition",
    "Consent",
    "CustomerTag",
    "CustomerMerge",
    "MergeSuggestion",
    "Event",
    "EventSource",
    "Identity",
    "Inbox",
    "InboxHealth",
    "Job",
    "Membership",
    "MailboxState",
    "Message",
    "Notification",
    "Order",
    "StreamEvent",
    "Team",
    "UnparsedPayload",
    "Visitor",
    "TeamMember",
    "User",
    "Workspace",
]
